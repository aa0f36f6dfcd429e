"""Receiving: the action is the subscription; one receive thread per Pulsar consumer.

The thread only receives (``receive`` then ``batch_receive``) and hands each batch to the
loop in one call; the loop builds the deliveries and writes acks and nacks in ``settle``.
At most ``spec.prefetch`` deliveries are out unsettled per consumer. Design, settling and
the measurements behind them: docs/engines/pulsar.md, "Receiving" and "Inside the driver".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulsar

from ...driver import (
    Delivery,
    Outcome,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from ...errors import DriverError, SubscriptionBusyError
from ...redaction import redact_url
from ..kit.buffer import DeliveryBuffer
from ..kit.driver import channel_pattern
from . import wire
from .admin import PulsarAdmin
from .options import PulsarOptions, PulsarSubscriptionOptions, SubscriptionType

log = logging.getLogger(__name__)

_CONSUMER_TYPES = {
    SubscriptionType.KEY_SHARED: pulsar.ConsumerType.KeyShared,
    SubscriptionType.SHARED: pulsar.ConsumerType.Shared,
    SubscriptionType.FAILOVER: pulsar.ConsumerType.Failover,
    SubscriptionType.EXCLUSIVE: pulsar.ConsumerType.Exclusive,
}
_DRAIN = 500
"""Most messages one receive round hands to the loop."""
_BATCH_WAIT_MS = 1
"""How long one ``batch_receive`` waits for a full batch when fewer are buffered."""
_STALL_REPORT = 30.0
"""Seconds between warnings while a consumer stays disconnected."""
_PARTITION_SUFFIX = re.compile(r"-partition-\d+$")
_LAG_EVERY = 5.0
"""Seconds between reads of the subscription's backlog from the admin API."""


def _batch_size(prefetch: int) -> int:
    """Half the prefetch window (at most ``_DRAIN``): a round takes it while room is left."""
    return max(1, min(_DRAIN, prefetch // 2))


def _busy_message(name: str, kind: SubscriptionType, topics: str) -> str:
    other = (
        "use SubscriptionType.KEY_SHARED (the default) or SHARED so members share the work"
        if kind in (SubscriptionType.FAILOVER, SubscriptionType.EXCLUSIVE)
        else "every member of one subscription must use the same type"
    )
    return (
        f"Pulsar refused a consumer on subscription {name!r} ({kind.value}) of {topics}: "
        "ConsumerBusy (an Exclusive subscription already has its consumer, or the "
        "subscription is held with another type). To fix it: "
        f"{other}, or give this receiver its own subscription with "
        "PulsarSubscriptionOptions(name=...)"
    )


class PulsarDelivery(Delivery):
    """A Pulsar message handed to one member. What the core reads only now and then (the
    coordinates ``<topic>@<ledger>:<entry>:<batch index>``, the delivery count, the publish
    time, ``native``) is read from the message when asked."""

    __slots__ = ("_message", "_reader", "_released")

    def __init__(self, record: RawRecord, message: Any, reader: _Reader) -> None:
        # Hot path: the base class's slots set directly rather than through super().
        self.record = record
        self.outcome = None
        self.delay = 0.0
        self._message = message
        """pulsar-client's message: the binding's own (``_pulsar.Message``) where it has one."""
        self._reader = reader
        self._released = False

    @property
    def coordinates(self) -> str:  # type: ignore[override]
        mid = self._message.message_id()
        topic = self._message.topic_name().rsplit("/", 1)[-1]
        return f"{topic}@{mid.ledger_id()}:{mid.entry_id()}:{mid.batch_index()}"

    @property
    def delivery_count(self) -> int:  # type: ignore[override]
        """Pulsar's redelivery count + 1 (Pulsar keeps none on Exclusive and Failover)."""
        return int(self._message.redelivery_count()) + 1

    @property
    def timestamp(self) -> float:  # type: ignore[override]
        return float(self._message.publish_timestamp()) / 1000.0

    @property
    def native(self) -> pulsar.Message:
        """The public ``pulsar.Message`` (made without ``Message._wrap``, which makes a new
        ``BytesSchema`` per message)."""
        message = self._message
        if type(message) is _PUBLIC:
            return message
        wrapped = _new(_PUBLIC)
        wrapped._message = message
        wrapped._schema = _BYTES
        return wrapped


_PUBLIC = pulsar.Message
_new = object.__new__
_BYTES = pulsar.schema.BytesSchema()


def _binding(consumer: pulsar.Consumer) -> Any:
    """The binding object under pulsar-client's ``Consumer`` wrapper (the wrapper itself
    if a version has none): the same calls without the wrapper's per-call Python layer."""
    native = getattr(consumer, "_consumer", None)
    return consumer if native is None or not hasattr(native, "batch_receive") else native


class _Reader:
    """One Pulsar consumer, the thread that receives from it, and its settlement."""

    def __init__(
        self,
        subscription: PulsarSubscription,
        consumer: pulsar.Consumer,
        kind: SubscriptionType,
        channels: tuple[str, ...],
    ) -> None:
        self.subscription = subscription
        self.consumer = consumer
        self.native = _binding(consumer)
        self.kind = kind
        self.channels = channels
        self.nack_delay = subscription.nack_delay
        self._limit = subscription.prefetch
        self.batch = _batch_size(self._limit)
        self._outstanding = 0
        self._room = threading.Condition()
        self._stop = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop = asyncio.get_running_loop()
        self._topics: dict[str, str] = {}
        self.thread = threading.Thread(
            target=self._run, name=f"hexa-event-pulsar:{subscription.name}", daemon=True
        )
        self.disconnected_since: float | None = None
        self.warned_at = 0.0
        self.error = ""

    # -- the receive thread: no Python work beyond receiving (it would hold the GIL) -----

    def _wait_for_room(self) -> int:
        with self._room:
            while self._outstanding >= self._limit and not self._stop:
                self._room.wait(0.5)
            return self._limit - self._outstanding

    def release(self, count: int) -> None:
        """Settled deliveries make room (called on the loop thread; never blocks long)."""
        with self._room:
            self._outstanding -= count
            if self._outstanding < self._limit:
                self._room.notify()

    def _run(self) -> None:
        native = self.native
        while not self._stop:
            room = self._wait_for_room()
            if self._stop:
                break
            try:
                messages = [native.receive()]
            except pulsar.AlreadyClosed:
                break
            except pulsar.PulsarException as exc:
                if self._stop:
                    break
                self.error = f"receive failed: {type(exc).__name__} ({exc})"
                log.warning("Pulsar subscription %s: %s", self.subscription.name, self.error)
                time.sleep(0.5)
                continue
            except BaseException as exc:  # pragma: no cover - a bug of ours or the client's
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    why = f"{type(exc).__name__}: {exc}"
                    self._loop.call_soon_threadsafe(self.subscription.fail, why)
                break
            if room > self.batch:  # what is buffered, in one call (one GIL release)
                with contextlib.suppress(pulsar.PulsarException):
                    messages.extend(native.batch_receive())
            else:
                while len(messages) < room:
                    try:
                        messages.append(native.receive(0))
                    except pulsar.PulsarException:
                        break
            with self._room:
                self._outstanding += len(messages)
            try:
                self._loop.call_soon_threadsafe(self.subscription.arrived, self, messages)
            except RuntimeError:  # the loop is closed: nobody will settle these
                break

    # -- on the loop thread --------------------------------------------------------------

    def _channel(self, topic: str) -> str:
        """The channel of a full topic name (per topic, once)."""
        channel = self._topics.get(topic)
        if channel is None:
            short = topic.rsplit("/", 1)[-1]
            channel = self._topics[topic] = _PARTITION_SUFFIX.sub("", short)
        return channel

    def deliveries(self, messages: list[Any]) -> list[PulsarDelivery]:
        """The deliveries of a received batch. A message Pulsar delivered before its
        not-before time (up to one tick early) goes back until then, leaving the window."""
        go_body = self.subscription.go_body
        only = self.channels[0] if len(self.channels) == 1 else None
        not_before, b64 = wire.NOT_BEFORE_PROPERTY, wire.B64_PROPERTY
        deliveries: list[PulsarDelivery] = []
        early = 0
        for message in messages:
            props = message.properties()
            if not_before in props and props[not_before].isdigit():
                wait = int(props[not_before]) / 1000.0 - time.time()
                if wait > 0:
                    early += 1
                    self.nack(message, wait)
                    continue
            data = message.data()
            opened = wire.from_go_body(data) if go_body else None
            if opened is not None:
                headers, data = opened
            elif b64 in props or not_before in props:
                headers = wire.from_properties(props)
            else:  # the common case, inline: text values only
                headers = {name: value.encode() for name, value in props.items()}
            channel = only or self._channel(message.topic_name())
            record = RawRecord(channel, message.partition_key(), headers, data)
            deliveries.append(PulsarDelivery(record, message, self))
        if early:
            self.release(early)
        return deliveries

    def settle(self, deliveries: Sequence[PulsarDelivery]) -> None:
        """Write the outcomes of settled deliveries, here on the loop thread (the receive
        thread waits in the client meanwhile, GIL free). Each frees its place of the
        window once (a retried settle frees nothing twice). A failed ack is logged (the
        message comes again, as after any lost ack); a failed nack raises."""
        fresh = 0
        for delivery in deliveries:
            if not delivery._released:
                delivery._released = True
                fresh += 1
        if fresh:
            self.release(fresh)
        acknowledge = self.native.acknowledge
        for delivery in deliveries:
            if delivery.outcome is Outcome.NACK:
                self.nack(delivery._message, delivery.delay)
                continue
            try:
                acknowledge(delivery._message)
            except pulsar.AlreadyClosed:
                raise
            except pulsar.PulsarException as exc:
                log.warning(
                    "Pulsar subscription %s: an ack failed (%s: %s); the message will be "
                    "delivered again",
                    self.subscription.name,
                    type(exc).__name__,
                    exc,
                )

    def nack(self, message: Any, delay: float) -> None:
        """Redeliver ``message`` no earlier than ``delay`` s: Pulsar's nack delay is fixed
        per consumer, so a longer one waits on a timer here first."""
        wait = delay - self.nack_delay
        if wait <= 0:
            self.native.negative_acknowledge(message)
            return

        def fire() -> None:
            self._timers.discard(handle)
            if not self._stop:
                try:
                    self.native.negative_acknowledge(message)
                except pulsar.PulsarException as exc:
                    log.debug("late nack on a closed consumer: %s", exc)

        handle = self._loop.call_later(wait, fire)
        self._timers.add(handle)

    def stop(self) -> None:
        self._stop = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        with self._room:
            self._room.notify_all()


class PulsarSubscription(Subscription):
    """A member of one Pulsar subscription (the action)."""

    def __init__(
        self,
        client: pulsar.Client,
        options: PulsarOptions,
        spec: SubscriptionSpec,
        sub_options: PulsarSubscriptionOptions,
        on_close: Callable[[PulsarSubscription], None],
        admin: PulsarAdmin,
    ) -> None:
        self._admin = admin
        self._client = client
        self._options = options
        self._spec = spec
        self._sub_options = sub_options
        self._on_close = on_close
        self.name = sub_options.name or spec.group
        self.nack_delay = sub_options.nack_delay
        self.prefetch = max(1, spec.prefetch)
        self.go_body = options.body == "go"
        self._readers: list[_Reader] = []
        self._buffer: DeliveryBuffer[PulsarDelivery, PulsarDelivery] = DeliveryBuffer()
        self._closed = False
        self._fatal = ""
        self._watch: asyncio.Task[None] | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._discovery_error = ""
        self._lag: int | None = None
        self._pattern = channel_pattern(spec)

    def __repr__(self) -> str:
        return f"PulsarSubscription({self.name!r}, {self._sub_options.type.value})"

    def _channels(self) -> list[str]:
        """Every channel this member reads (or was asked to), sorted."""
        return sorted({c for r in self._readers for c in r.channels}.union(self._spec.channels))

    # -- starting ----------------------------------------------------------------------------

    def _consumer_kwargs(self, kind: SubscriptionType) -> dict[str, Any]:
        sub = self._sub_options
        kwargs: dict[str, Any] = {
            "consumer_type": _CONSUMER_TYPES[kind],
            "initial_position": (
                pulsar.InitialPosition.Earliest
                if self._spec.start == "earliest"
                else pulsar.InitialPosition.Latest
            ),
            "receiver_queue_size": sub.receiver_queue_size,
            "negative_ack_redelivery_delay_ms": int(sub.nack_delay * 1000),
            "batch_index_ack_enabled": True,
            "batch_receive_policy": pulsar.ConsumerBatchReceivePolicy(
                _batch_size(self._spec.prefetch), 0, _BATCH_WAIT_MS
            ),
        }
        if sub.ack_timeout:
            kwargs["unacked_messages_timeout_ms"] = int(sub.ack_timeout * 1000)
        kwargs.update(self._options.consumer_config)
        kwargs.update(sub.consumer_config)
        return kwargs

    async def _open(self, channels: Sequence[str], kind: SubscriptionType) -> None:
        """A consumer of this subscription on ``channels``, with its receive thread running."""
        label = f"channels {list(channels)}"
        topics = [self._options.topic(c) for c in channels]
        try:
            consumer = await asyncio.to_thread(
                self._client.subscribe, topics, self.name, **self._consumer_kwargs(kind)
            )
        except pulsar.ConsumerBusy:
            raise SubscriptionBusyError(_busy_message(self.name, kind, label)) from None
        except pulsar.PulsarException as exc:
            raise DriverError(
                f"cannot subscribe {self.name!r} ({kind.value}) to {label}: "
                f"{type(exc).__name__} ({exc}); is the broker at "
                f"{redact_url(self._options.service_url)} up?"
            ) from None
        reader = _Reader(self, consumer, kind, tuple(channels))
        self._readers.append(reader)
        reader.thread.start()

    async def _open_matching(self) -> None:
        """A consumer on the channels of the namespace the pattern matches that no consumer
        reads yet (pulsar-client's own pattern consumer looks only every 60 s)."""
        assert self._pattern is not None
        read = set(self._channels())
        found = await self._admin.channels()
        matched = [c for c in found if self._pattern.fullmatch(c) and c not in read]
        if matched and not self._closed:
            await self._open(matched, self._sub_options.type)
            log.info("Pulsar subscription %s reads %s", self.name, matched)

    async def start(self) -> None:
        """Create the consumers (retry channels: Shared, which honours deliver-at times);
        raises SubscriptionBusyError when Pulsar refuses one."""
        spec = self._spec
        retry = set(spec.retry_channels) or {
            c for c in spec.channels if re.fullmatch(r".+\.retry\.\d+", c)
        }
        main = tuple(c for c in spec.channels if c not in retry)
        try:
            if main:
                await self._open(main, self._sub_options.type)
            if retry:
                await self._open([c for c in spec.channels if c in retry], SubscriptionType.SHARED)
            if self._pattern is not None:
                await self._open_matching()
                self._discovery = asyncio.create_task(
                    self._discover(), name=f"pulsar-discovery:{self.name}"
                )
        except BaseException:
            await self.close()
            raise
        self._watch = asyncio.create_task(self._watchdog(), name=f"pulsar-watch:{self.name}")

    async def _discover(self) -> None:
        """Pattern subscriptions: look for new matching topics every ``pattern_discovery`` s."""
        while not self._closed:
            await asyncio.sleep(self._sub_options.pattern_discovery)
            try:
                await self._open_matching()
                self._discovery_error = ""
            except (DriverError, OSError) as exc:
                self._discovery_error = f"pattern discovery failed: {exc}"
                log.warning("Pulsar subscription %s: %s", self.name, self._discovery_error)

    async def _watchdog(self) -> None:
        """Report consumers that lost the broker (pulsar-client reconnects on its own), and
        read the subscription's backlog (``status().lag``) every ``_LAG_EVERY`` seconds."""
        lag_due = 0.0
        where = redact_url(self._options.service_url)
        while not self._closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if now >= lag_due:
                lag_due = now + _LAG_EVERY
                try:
                    counts = list((await self._admin.backlog(self._channels(), self.name)).values())
                except DriverError:
                    counts = []
                known = [n for n in counts if n is not None]
                self._lag = sum(known) if known and len(known) == len(counts) else None
            for reader in self._readers:
                connected = False
                with contextlib.suppress(pulsar.PulsarException):
                    connected = bool(reader.consumer.is_connected())
                if connected:
                    if reader.disconnected_since is not None:
                        log.info("Pulsar subscription %s: reconnected", self.name)
                    reader.disconnected_since = None
                    reader.error = ""
                elif reader.disconnected_since is None:
                    reader.disconnected_since = reader.warned_at = now
                    reader.error = "disconnected from the broker; pulsar-client is reconnecting"
                else:
                    reader.error = (
                        f"disconnected from the broker for {now - reader.disconnected_since:.0f}"
                        f" s; pulsar-client is reconnecting to {where}"
                    )
                    if now - reader.warned_at >= _STALL_REPORT:
                        reader.warned_at = now
                        log.warning("Pulsar subscription %s: %s", self.name, reader.error)

    # -- the contract ------------------------------------------------------------------------

    def arrived(self, reader: _Reader, messages: list[Any]) -> None:
        """A batch of messages from a receive thread (runs on the loop)."""
        if self._closed:
            return
        try:
            deliveries = reader.deliveries(messages)
        except Exception as exc:  # pragma: no cover - a bug of ours or the client's
            self.fail(f"{type(exc).__name__}: {exc}")
            return
        self._buffer.extend(deliveries)

    def fail(self, why: str) -> None:
        """This member cannot go on: every fetch raises from now on (on the loop)."""
        self._fatal = why
        text = f"Pulsar subscription {self.name!r} cannot go on: {why}"
        self._buffer.fail(DriverError(text, retriable=False))

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        """Wait for 1..max_count deliveries; ``[]`` once closed."""
        return await self._buffer.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Acks and nacks, per consumer."""
        by_reader: dict[_Reader, list[PulsarDelivery]] = {}
        for delivery in deliveries:
            if not isinstance(delivery, PulsarDelivery):
                raise DriverError(f"{delivery!r} was not delivered by this Pulsar subscription")
            if delivery.outcome is not None:
                by_reader.setdefault(delivery._reader, []).append(delivery)
        for reader, group in by_reader.items():
            try:
                reader.settle(group)
            except pulsar.AlreadyClosed:
                log.debug("settling on a closed Pulsar consumer: Pulsar redelivers them")
            except pulsar.PulsarException as exc:
                raise DriverError(
                    f"Pulsar subscription {self.name!r}: settling failed: "
                    f"{type(exc).__name__} ({exc})"
                ) from None

    async def lag(self) -> Mapping[str, int] | None:
        """The subscription's backlog per channel, from the admin API's topic stats."""
        counts = await self._admin.backlog(self._channels(), self.name)
        known = {channel: n for channel, n in counts.items() if n is not None}
        return known or None

    def status(self) -> SubscriptionStatus:
        assignment = [f"{','.join(r.channels)} ({r.kind.value})" for r in self._readers]
        if self._pattern is not None:
            assignment.append(f"pattern {self._pattern.pattern} ({self._sub_options.type.value})")
        errors = [r.error for r in self._readers] + [self._discovery_error, self._fatal]
        return SubscriptionStatus(
            assignment=tuple(assignment), error="; ".join(e for e in errors if e), lag=self._lag
        )

    async def close(self) -> None:
        """Close the consumers (unsettled messages go back to the subscription); an
        ephemeral subscription is then deleted, so the broker retains nothing for it."""
        if self._closed:
            return
        self._closed = True
        self._buffer.close()
        for task in (self._watch, self._discovery):
            if task is not None:
                task.cancel()
        for reader in self._readers:
            reader.stop()
        for reader in self._readers:
            try:
                await asyncio.to_thread(reader.consumer.close)
            except pulsar.PulsarException as exc:
                log.debug("closing a Pulsar consumer: %s", exc)
            if reader.thread.is_alive():
                await asyncio.to_thread(reader.thread.join, 10.0)
        if self._spec.ephemeral:
            await self._admin.delete_subscription(self._channels(), self.name)
        self._on_close(self)
