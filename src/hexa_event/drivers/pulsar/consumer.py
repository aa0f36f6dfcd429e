"""Receiving: the action is the subscription; one receive thread per Pulsar consumer.

A subscription holds one Pulsar consumer on the action's source channels with the chosen
subscription type (Key_Shared by default), one more per batch of topics its pattern (if any)
matched, and, when the action has retry channels, a consumer of type Shared on them: retry
copies carry a deliver-at time, which Pulsar honours on Shared subscriptions, and they have
no order to keep.

Each consumer has a thread that blocks in pulsar-client's ``receive()``, takes what is
already buffered with one ``batch_receive`` (waiting at most 1 ms for a full batch) and
hands the client's messages to the event loop in one call per batch (no future per message,
and a cancelled ``fetch`` loses nothing: deliveries wait in the subscription's buffer). The
thread does no other Python work: every pulsar-client call gives up the GIL and has to take
it back, so the loop turns messages into deliveries and acknowledges in ``settle`` (while
the receive thread waits in the client, with the GIL free). Both use pulsar-client's
binding objects (``_pulsar``) under its Python wrappers where it has them, which saves the
wrappers' per-message Python work; ``Delivery.native`` still gives a ``pulsar.Message``. At
most ``spec.prefetch`` deliveries are out unsettled per consumer; the thread waits for room
before receiving more (receiving one batch ahead of the window and ``batch_receive`` alone
while batches came full were measured, and were not faster).

Settling:
- ack: an individual (batch-index) acknowledgement, on every subscription type (Pulsar
  refuses cumulative acks on Shared and Key_Shared; on Failover one cumulative ack per
  batch measured slower than individual acks).
- nack(delay): a negative acknowledgement, so the broker redelivers the same message (same
  position, its redelivery count raised) no earlier than the delay. Pulsar's nack delay is
  fixed per consumer (``PulsarSubscriptionOptions.nack_delay``); a longer delay is held as
  a timer in the driver before the nack is sent. Republishing with deliver-after was not
  chosen: the copy would go behind later records of its key for good and lose its
  redelivery count.
- A nack still waiting on its timer when the subscription closes goes back at once: Pulsar
  redelivers whatever a closed consumer held (the core re-checks a retry copy's due time and
  hands an early one back again). On Exclusive and Failover, Pulsar answers a nack by
  redelivering everything unacknowledged (and keeps no redelivery count): prefer the
  default Key_Shared where handlers fail.
- Pulsar groups acknowledgements for up to 100 ms; a crash inside that window means the
  messages are delivered again (at-least-once), never lost.

Redelivery count: ``Delivery.delivery_count`` is Pulsar's redelivery count + 1 (Shared and
Key_Shared; Pulsar keeps no count on Exclusive/Failover, where it stays 1).
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
from ..kit.buffer import DeliveryBuffer
from ..kit.driver import channel_pattern
from . import wire
from .admin import PulsarAdmin
from .options import PulsarOptions, PulsarSubscriptionOptions, SubscriptionType, shown_url

log = logging.getLogger(__name__)

_CONSUMER_TYPES = {
    SubscriptionType.KEY_SHARED: pulsar.ConsumerType.KeyShared,
    SubscriptionType.SHARED: pulsar.ConsumerType.Shared,
    SubscriptionType.FAILOVER: pulsar.ConsumerType.Failover,
    SubscriptionType.EXCLUSIVE: pulsar.ConsumerType.Exclusive,
}
_ONE_ACTIVE = (SubscriptionType.FAILOVER, SubscriptionType.EXCLUSIVE)
"""Types on which one member receives all (the others wait)."""
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
    """Messages one ``batch_receive`` returns at most: half the prefetch window, so that
    a receive round takes it while room for a whole batch is left."""
    return max(1, min(_DRAIN, prefetch // 2))


def _busy_message(name: str, kind: SubscriptionType, topics: str) -> str:
    other = (
        "use SubscriptionType.KEY_SHARED (the default) or SHARED so members share the work"
        if kind in _ONE_ACTIVE
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
    """A Pulsar message handed to one member.

    Its coordinates (``<topic>@<ledger>:<entry>:<batch index>``, the topic's short name with
    its partition) are read from the message when asked for: the core reads them only for
    records without an event id, for dead letters and in errors."""

    __slots__ = ("_message", "_reader", "_released")

    def __init__(
        self,
        record: RawRecord,
        message: Any,
        reader: _Reader,
        delivery_count: int,
        timestamp: float,
    ) -> None:
        super().__init__(record, coordinates="", delivery_count=delivery_count, timestamp=timestamp)
        self._message = message
        """pulsar-client's message: the binding's own (``_pulsar.Message``) where it has one."""
        self._reader = reader
        self._released = False

    @property  # type: ignore[override]
    def coordinates(self) -> str:
        mid = self._message.message_id()
        topic = self._message.topic_name().rsplit("/", 1)[-1]
        return f"{topic}@{mid.ledger_id()}:{mid.entry_id()}:{mid.batch_index()}"

    @coordinates.setter
    def coordinates(self, _value: str) -> None:
        pass  # always read from the message

    @property
    def native(self) -> pulsar.Message:
        """The ``pulsar.Message``."""
        return _public(self._message)


def _public(message: Any) -> pulsar.Message:
    """pulsar-client's public ``Message`` for a binding message (the same if it is one).

    Built here rather than with ``Message._wrap``, which makes a new ``BytesSchema`` (a
    JSON encoding) per message: the core reads ``native`` for every delivery."""
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
        limit: int,
        nack_delay: float,
    ) -> None:
        self.subscription = subscription
        self.consumer = consumer
        self.native = _binding(consumer)
        self.kind = kind
        self.channels = channels
        self.nack_delay = nack_delay
        self._limit = limit
        self.batch = _batch_size(limit)
        self._outstanding = 0
        self._room = threading.Condition()
        self._stop = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop = asyncio.get_running_loop()
        self._topics: dict[str, str] = {}
        self.thread = threading.Thread(
            target=self._run, name=f"hexa-event-pulsar:{consumer.subscription_name()}", daemon=True
        )
        self.disconnected_since: float | None = None
        self.warned_at = 0.0
        self.error = ""

    # -- the receive thread --------------------------------------------------------------

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
        """Receive batches and hand them to the loop; no other Python work here."""
        native = self.native
        while not self._stop:
            room = self._wait_for_room()
            if self._stop:
                break
            try:
                first = native.receive()
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
            messages = [first]
            if room > self.batch:
                # What is buffered, in one call: one GIL release, not one per message.
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
        """The deliveries of a received batch. Messages Pulsar delivered before their
        not-before time are held back until then (and leave the prefetch window)."""
        go_body = self.subscription.go_body
        # One channel (partitioned or not): no need to ask each message for its topic.
        only = self.channels[0] if len(self.channels) == 1 else None
        names = self._topics
        from_properties = wire.from_properties
        not_before_property = wire.NOT_BEFORE_PROPERTY
        b64_property = wire.B64_PROPERTY
        deliveries: list[PulsarDelivery] = []
        early: list[tuple[Any, float]] = []
        now = 0.0
        for message in messages:
            if only is None:
                topic = message.topic_name()
                channel = names.get(topic) or self._channel(topic)
            else:
                channel = only
            data = message.data()
            props = message.properties()
            headers: dict[str, bytes] | None = None
            if go_body:
                opened = wire.from_go_body(data)
                if opened is not None:
                    headers, data = opened
            if headers is None:
                if b64_property in props or not_before_property in props:
                    headers = from_properties(props)
                else:  # the common case, inline: text values only
                    headers = {name: value.encode() for name, value in props.items()}
            delivery = PulsarDelivery(
                RawRecord(channel, message.partition_key(), headers, data),
                message,
                self,
                message.redelivery_count() + 1,
                message.publish_timestamp() / 1000.0,
            )
            # Pulsar may deliver a delayed message up to one tick early: its due time goes
            # along, and such a message goes back until then.
            not_before = props.get(not_before_property)
            if not_before is not None and not_before.isdigit():
                now = now or time.time()
                due = int(not_before) / 1000.0
                if due > now:
                    early.append((message, due - now))
                    continue
            deliveries.append(delivery)
        if early:
            self.release(len(early))
            self.hold_back(early)
        return deliveries

    def settle(self, deliveries: Sequence[PulsarDelivery]) -> None:
        """Write the outcomes of settled deliveries, here on the loop thread (the receive
        thread waits in the client meanwhile, with the GIL free). Each frees its place of
        the window once (a retried settle frees nothing twice).

        A failed ack is logged, not raised: the message is then delivered again
        (at-least-once), as after any lost acknowledgement. A failed nack raises."""
        fresh = 0
        for delivery in deliveries:
            if not delivery._released:
                delivery._released = True
                fresh += 1
        if fresh:
            self.release(fresh)
        acknowledge = self.native.acknowledge
        for delivery in deliveries:
            message = delivery._message
            if delivery.outcome is Outcome.NACK:
                wait = delivery.delay - self.nack_delay
                if wait <= 0:
                    self.native.negative_acknowledge(message)
                else:
                    self._nack_later(wait, message)
                continue
            try:
                acknowledge(message)
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

    def hold_back(self, early: list[tuple[Any, float]]) -> None:
        """Messages Pulsar delivered before their not-before time go back until then."""
        for message, remaining in early:
            wait = remaining - self.nack_delay
            if wait <= 0:
                self.native.negative_acknowledge(message)
            else:
                self._nack_later(wait, message)

    def _nack_later(self, wait: float, message: Any) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            if not self._stop:
                try:
                    self.native.negative_acknowledge(message)
                except pulsar.PulsarException as exc:
                    log.debug("late nack on a closed consumer: %s", exc)

        handle = self._loop.call_later(wait, fire)
        self._timers.add(handle)

    def connected(self) -> bool:
        try:
            return bool(self.consumer.is_connected())
        except pulsar.PulsarException:
            return False

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
        self._loop = asyncio.get_running_loop()

    def __repr__(self) -> str:
        return f"PulsarSubscription({self.name!r}, {self._sub_options.type.value})"

    # -- starting ----------------------------------------------------------------------------

    def _split(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        retry = set(self._spec.retry_channels) or {
            c for c in self._spec.channels if re.fullmatch(r".+\.retry\.\d+", c)
        }
        main = tuple(c for c in self._spec.channels if c not in retry)
        return main, tuple(c for c in self._spec.channels if c in retry)

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

    async def _open(self, channels: Sequence[str], kind: SubscriptionType) -> _Reader:
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
                f"{shown_url(self._options.service_url)} up?"
            ) from None
        limit = max(1, self._spec.prefetch)
        reader = _Reader(self, consumer, kind, tuple(channels), limit, self._sub_options.nack_delay)
        self._readers.append(reader)
        reader.thread.start()
        return reader

    async def _matching(self) -> list[str]:
        """Channels of the namespace the pattern matches that no consumer reads yet."""
        assert self._pattern is not None
        read = {c for reader in self._readers for c in reader.channels}
        read.update(self._spec.channels)
        return sorted(
            c for c in await self._admin.channels() if self._pattern.fullmatch(c) and c not in read
        )

    async def start(self) -> None:
        """Create the consumers; raises SubscriptionBusyError when Pulsar refuses one."""
        main, retry = self._split()
        kind = self._sub_options.type
        try:
            if main:
                await self._open(main, kind)
            if retry:
                await self._open(retry, SubscriptionType.SHARED)
            if self._pattern is not None:
                matched = await self._matching()
                if matched:
                    await self._open(matched, kind)
                self._discovery = asyncio.create_task(
                    self._discover(), name=f"pulsar-discovery:{self.name}"
                )
        except BaseException:
            await self.close()
            raise
        self._watch = asyncio.create_task(self._watchdog(), name=f"pulsar-watch:{self.name}")

    async def _discover(self) -> None:
        """Pattern subscriptions: look for new matching topics every ``pattern_discovery`` s.

        pulsar-client's own pattern consumer looks every 60 s whatever it is told (its
        Python binding drops the setting), so the driver lists the namespace itself.
        """
        kind = self._sub_options.type
        while not self._closed:
            await asyncio.sleep(self._sub_options.pattern_discovery)
            try:
                matched = await self._matching()
                if matched and not self._closed:
                    await self._open(matched, kind)
                    log.info("Pulsar subscription %s now also reads %s", self.name, matched)
                self._discovery_error = ""
            except (DriverError, OSError) as exc:
                self._discovery_error = f"pattern discovery failed: {exc}"
                log.warning("Pulsar subscription %s: %s", self.name, self._discovery_error)

    async def _watchdog(self) -> None:
        """Report consumers that lost the broker (pulsar-client reconnects on its own), and
        read the subscription's backlog (``status().lag``) every ``_LAG_EVERY`` seconds."""
        lag_due = 0.0
        while not self._closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if now >= lag_due:
                lag_due = now + _LAG_EVERY
                channels = [c for reader in self._readers for c in reader.channels]
                try:
                    counts = await self._admin.backlog(channels, self.name) if channels else {}
                except DriverError:
                    counts = {}
                known = [n for n in counts.values() if n is not None]
                self._lag = sum(known) if known and len(known) == len(counts) else None
            for reader in self._readers:
                if reader.connected():
                    if reader.disconnected_since is not None:
                        log.info("Pulsar subscription %s: reconnected", self.name)
                    reader.disconnected_since = None
                    reader.error = ""
                    continue
                if reader.disconnected_since is None:
                    reader.disconnected_since = reader.warned_at = now
                    reader.error = "disconnected from the broker; pulsar-client is reconnecting"
                    continue
                down = now - reader.disconnected_since
                reader.error = (
                    f"disconnected from the broker for {down:.0f} s; pulsar-client is "
                    f"reconnecting to {shown_url(self._options.service_url)}"
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
        channels = {c for reader in self._readers for c in reader.channels}
        channels.update(self._spec.channels)
        counts = await self._admin.backlog(sorted(channels), self.name)
        known = {channel: n for channel, n in counts.items() if n is not None}
        return known or None

    def status(self) -> SubscriptionStatus:
        assignment: list[str] = []
        errors: list[str] = []
        for reader in self._readers:
            assignment.append(f"{','.join(reader.channels)} ({reader.kind.value})")
            if reader.error:
                errors.append(reader.error)
        if self._pattern is not None:
            assignment.append(f"pattern {self._pattern.pattern} ({self._sub_options.type.value})")
        if self._discovery_error:
            errors.append(self._discovery_error)
        if self._fatal:
            errors.append(self._fatal)
        return SubscriptionStatus(
            assignment=tuple(assignment), error="; ".join(errors), lag=self._lag
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
            channels = sorted({c for reader in self._readers for c in reader.channels})
            await self._admin.delete_subscription(channels, self.name)
        self._on_close(self)
