"""Receiving: the action is the subscription; one receive thread per Pulsar consumer hands
what it received to the loop, which builds the deliveries (at most ``spec.prefetch`` out
unsettled per consumer) and writes acks and nacks in ``settle``. Design and measurements:
docs/engines/pulsar.md, "Receiving" and "Inside the driver".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
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
from ...numbers import epoch_seconds
from ...redaction import redact_url
from ..kit.buffer import DeliveryBuffer
from ..kit.driver import channel_pattern
from .admin import PARTITION_SUFFIX, PulsarAdmin
from .options import PulsarOptions, PulsarSubscriptionOptions, SubscriptionType
from .producer import B64_PROPERTY, NOT_BEFORE_PROPERTY, from_go_body, from_properties

log = logging.getLogger(__name__)

_LONGEST_HOLD = 367 * 86_400.0
"""Seconds ahead a not-before time may be and still be held: further than any schedule our
emitters accept (366 days) is a foreign producer's nonsense, delivered at once rather than
held in the window for years (the core still holds a record by its own due-time headers)."""

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
_RECEIVE_WAIT_MS = 500
"""How long the receive thread waits for a message before it looks whether it should stop."""
_STALL_REPORT = 30.0
"""Seconds between warnings while a consumer stays disconnected."""
_LAG_EVERY = 5.0
"""Seconds between reads of the subscription's backlog from the admin API."""
_PUBLIC = pulsar.Message
_BYTES = pulsar.schema.BytesSchema()


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
        self._message = message  # the binding's ``_pulsar.Message``, not the public wrapper
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
        wrapped = object.__new__(_PUBLIC)
        wrapped._message = self._message
        wrapped._schema = _BYTES
        return wrapped


class _Reader:
    """One Pulsar consumer: the thread receiving from it, the window of its deliveries out
    unsettled, their settlement and its connection state."""

    def __init__(
        self,
        owner: PulsarSubscription,
        consumer: pulsar.Consumer,
        kind: SubscriptionType,
        channels: tuple[str, ...],
    ) -> None:
        self.owner = owner
        self.consumer = consumer
        self.native = consumer._consumer  # the binding's, without the wrapper's Python layer
        self.kind = kind
        self.channels = channels
        self._limit = owner.prefetch
        self._outstanding = 0  # deliveries handed out and not settled (the loop's)
        self._ready: deque[Any] = deque()  # received, waiting for room in the window
        self._reserve = min(self._limit, _DRAIN)  # the thread receives while fewer are ready
        self._hungry = True  # the loop has room and found nothing ready: wake it
        self._lock = threading.Condition()  # guards _ready and _hungry
        self._stop = False
        self._loop = asyncio.get_running_loop()
        self._topics: dict[str, str] = {}
        self._timers: set[asyncio.TimerHandle] = set()  # long nacks, early messages held
        self.disconnected_since: float | None = None
        self.warned_at = 0.0
        self.error = ""
        self.thread = threading.Thread(
            target=self._run, name=f"hexa-event-pulsar:{owner.name}", daemon=True
        )
        self.thread.start()

    # -- the receive thread: no Python work beyond receiving (it would hold the GIL) -----

    def _run(self) -> None:
        native, ready, lock = self.native, self._ready, self._lock
        while not self._stop:
            with lock:
                while len(ready) >= self._reserve and not self._stop:
                    lock.wait(0.5)
            if self._stop:
                break
            try:
                received = [native.receive(_RECEIVE_WAIT_MS)]
            except pulsar.Timeout:
                continue  # look at _stop again: a closed client may never answer
            except pulsar.AlreadyClosed:
                break
            except pulsar.PulsarException as exc:
                if self._stop:
                    break
                self.error = f"receive failed: {type(exc).__name__} ({exc})"
                log.warning("Pulsar subscription %s: %s", self.owner.name, self.error)
                time.sleep(0.5)
                continue
            except BaseException as exc:  # pragma: no cover - a bug of ours or the client's
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    why = f"{type(exc).__name__}: {exc}"
                    self._loop.call_soon_threadsafe(self.owner.fail, why)
                break
            with contextlib.suppress(pulsar.PulsarException):  # the rest buffered, at once
                received.extend(native.batch_receive())
            with lock:
                ready.extend(received)
                wake, self._hungry = self._hungry, False
            if wake:  # else the loop takes them itself once settles make room
                try:
                    self._loop.call_soon_threadsafe(self._take)
                except RuntimeError:  # the loop is closed: nobody will settle these
                    break

    # -- on the loop thread --------------------------------------------------------------

    def _take(self) -> None:
        """Hand what is ready to the buffer, as far as the window has room; when it has
        room left, the receive thread wakes the loop for the next messages."""
        owner = self.owner
        if owner.closed:
            return
        room, ready, lock = self._limit - self._outstanding, self._ready, self._lock
        with lock:
            count = min(room, len(ready))
            if count == len(ready):  # the common case, at C speed
                messages = list(ready)
                ready.clear()
            else:
                messages = [ready.popleft() for _ in range(count)]
            self._hungry = room > count
            if len(ready) < self._reserve:
                lock.notify()
        if not messages:
            return
        self._outstanding += count
        try:
            deliveries = self._deliveries(messages)
        except Exception as exc:  # a bug of ours or the client's: fail loudly, not leak room
            owner.fail(f"{type(exc).__name__}: {exc}")
            return
        owner.buffer.extend(deliveries)

    def _deliveries(self, messages: list[Any]) -> list[PulsarDelivery]:
        """The deliveries of ``messages``; a message Pulsar delivered before its not-before
        time is held until then (keeping its place of the window) instead."""
        go_body = self.owner.options.body == "go"
        only = self.channels[0] if len(self.channels) == 1 else None
        not_before, b64 = NOT_BEFORE_PROPERTY, B64_PROPERTY
        deliveries: list[PulsarDelivery] = []
        append = deliveries.append
        for message in messages:
            try:
                props, key = message.properties(), message.partition_key()
            except UnicodeDecodeError:  # bytes a foreign producer set
                props, key = _readable(message)
            channel = only or self._channel(message.topic_name())
            data = message.data()
            if go_body and (opened := from_go_body(data)) is not None:
                headers, data = opened
            elif b64 in props or not_before in props:
                headers = from_properties(props)
            else:  # the common case: text values only
                headers = {name: value.encode() for name, value in props.items()}
            delivery = PulsarDelivery(RawRecord(channel, key, headers, data), message, self)
            due = epoch_seconds(props[not_before]) if not_before in props else None
            if due is not None and 0 < (wait := due - time.time()) <= _LONGEST_HOLD:  # early
                self._after(wait, partial(self.owner.buffer.append, delivery))
            else:
                append(delivery)
        return deliveries

    def _channel(self, topic: str) -> str:
        """The channel of a full topic name (per topic, once)."""
        if (channel := self._topics.get(topic)) is None:
            channel = self._topics[topic] = PARTITION_SUFFIX.sub("", topic.rsplit("/", 1)[-1])
        return channel

    def settle(self, deliveries: Sequence[PulsarDelivery]) -> None:
        """Write the outcomes, here on the loop thread (the receive thread waits in the
        client meanwhile, GIL free). Each delivery frees its place of the window once (a
        retried settle frees nothing twice). A failed ack is logged (the message comes
        again, as after any lost ack); a failed nack raises."""
        fresh = 0
        for delivery in deliveries:
            if not delivery._released:
                delivery._released = True
                fresh += 1
        if fresh:  # room in the window: take what the receive thread has ready
            self._outstanding -= fresh
            self._take()
        acknowledge, nack = self.native.acknowledge, Outcome.NACK
        for delivery in deliveries:
            if delivery.outcome is nack:
                self.nack(delivery._message, delivery.delay)
                continue
            try:
                acknowledge(delivery._message)
            except pulsar.AlreadyClosed:
                raise
            except pulsar.PulsarException as exc:
                why = f"an ack failed ({type(exc).__name__}: {exc}); it is delivered again"
                log.warning("Pulsar subscription %s: %s", self.owner.name, why)

    def nack(self, message: Any, delay: float) -> None:
        """Redeliver ``message`` no earlier than ``delay`` s: Pulsar's nack delay is fixed
        per consumer, so a longer one waits on a timer here first."""
        wait = delay - self.owner.sub_options.nack_delay
        if wait <= 0:
            self.native.negative_acknowledge(message)
        else:
            self._after(wait, partial(self.native.negative_acknowledge, message))

    def _after(self, wait: float, action: Callable[[], None]) -> None:
        """Run ``action`` in ``wait`` s unless the consumer closes first (its close gives
        the message back)."""

        def fire() -> None:
            self._timers.discard(timer)
            try:
                action()
            except pulsar.PulsarException as exc:  # a late nack
                log.debug("late nack on a closed consumer: %s", exc)

        timer = self._loop.call_later(wait, fire)
        self._timers.add(timer)

    def watch(self, now: float) -> None:
        """Note whether the consumer is connected (pulsar-client reconnects on its own);
        warn every ``_STALL_REPORT`` s while it is not."""
        connected = False
        with contextlib.suppress(pulsar.PulsarException):
            connected = bool(self.consumer.is_connected())
        if connected:
            if self.disconnected_since is not None:
                log.info("Pulsar subscription %s: reconnected", self.owner.name)
            self.disconnected_since, self.error = None, ""
            return
        if self.disconnected_since is None:
            self.disconnected_since = self.warned_at = now
        self.error = (
            f"disconnected from the broker for {now - self.disconnected_since:.0f} s; "
            f"pulsar-client is reconnecting to {redact_url(self.owner.options.service_url)}"
        )
        if now - self.warned_at >= _STALL_REPORT:
            self.warned_at = now
            log.warning("Pulsar subscription %s: %s", self.owner.name, self.error)

    async def close(self) -> None:
        """Stop the thread and the nack timers, then close the consumer (what is not
        settled goes back to the subscription)."""
        self._stop = True
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            self._lock.notify_all()
        await asyncio.to_thread(close_quietly, self.consumer)
        if self.thread.is_alive():
            await asyncio.to_thread(self.thread.join, 10.0)


def _readable(message: Any) -> tuple[dict[str, str], str]:
    """The properties and key of a message whose key or properties are not UTF-8 (a Go or
    C++ producer's): what is not UTF-8 is left out with a warning, the other kept (a key
    that is not UTF-8 lost our headers, properties that are not lost the key)."""
    props: dict[str, str] = {}
    key = ""
    try:
        props = message.properties()
    except UnicodeDecodeError:
        log.warning("Pulsar: a message's properties are not UTF-8; delivered without them")
    try:
        key = message.partition_key()
    except UnicodeDecodeError:
        log.warning("Pulsar: a message's key is not UTF-8; delivered with the empty key")
    return props, key


def _close_unread(made: asyncio.Future[Any]) -> None:
    """Close (in a worker thread) the consumer ``made`` gave, if any: nobody reads it."""
    if not made.cancelled() and made.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, close_quietly, made.result())


def close_quietly(closable: Any) -> None:
    """``closable.close()`` (a consumer or the client; it blocks); a PulsarException (closed
    already, or the broker gone) is only logged."""
    try:
        closable.close()
    except pulsar.PulsarException as exc:
        log.debug("closing a Pulsar %s: %s", type(closable).__name__, exc)


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
        self.options = options
        self._spec = spec
        self.sub_options = sub_options
        self._on_close = on_close
        self.name = sub_options.name or spec.group
        self.prefetch = max(1, spec.prefetch)
        self.buffer: DeliveryBuffer[PulsarDelivery, PulsarDelivery] = DeliveryBuffer()
        self.closed = False
        self._readers: list[_Reader] = []
        self._fatal = ""
        self._watcher: asyncio.Task[None] | None = None
        self._discovery_error = ""
        self._lag: int | None = None
        self._pattern = channel_pattern(spec)

    def __repr__(self) -> str:
        return f"PulsarSubscription({self.name!r}, {self.sub_options.type.value})"

    def _channels(self) -> list[str]:
        """Every channel this member reads (or was asked to), sorted."""
        return sorted({c for r in self._readers for c in r.channels}.union(self._spec.channels))

    # -- starting ----------------------------------------------------------------------------

    async def _open(self, channels: Sequence[str], kind: SubscriptionType) -> None:
        """A consumer of this subscription on ``channels``, with its receive thread running."""
        sub = self.sub_options
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
            # One batch_receive returns at most half the window, at most _DRAIN.
            "batch_receive_policy": pulsar.ConsumerBatchReceivePolicy(
                min(_DRAIN, max(1, self.prefetch // 2)), 0, _BATCH_WAIT_MS
            ),
            **self.options.consumer_config,
            **sub.consumer_config,
        }
        if sub.ack_timeout:  # consumer_config may not set it
            kwargs["unacked_messages_timeout_ms"] = int(sub.ack_timeout * 1000)
        # One topic by name, not in a list: pulsar-client makes a multi-topics consumer of a
        # list, which hands every message to another thread of the client before receive().
        topics = [self.options.topic(c) for c in channels]
        target = topics[0] if len(topics) == 1 else topics
        label = f"channels {list(channels)}"
        making = asyncio.ensure_future(
            asyncio.to_thread(self._client.subscribe, target, self.name, **kwargs)
        )
        try:
            consumer = await asyncio.shield(making)
        except asyncio.CancelledError:  # closed meanwhile: a consumer made after all is not read
            making.add_done_callback(_close_unread)
            raise
        except pulsar.ConsumerBusy:
            fix = (
                "use SubscriptionType.KEY_SHARED (the default) or SHARED so members share the work"
                if kind in (SubscriptionType.FAILOVER, SubscriptionType.EXCLUSIVE)
                else "every member of one subscription must use the same type"
            )
            raise SubscriptionBusyError(
                f"Pulsar refused a consumer on subscription {self.name!r} ({kind.value}) of "
                f"{label}: ConsumerBusy (an Exclusive subscription already has its consumer, "
                f"or the subscription is held with another type). To fix it: {fix}, or give "
                "this receiver its own subscription with PulsarSubscriptionOptions(name=...)"
            ) from None
        except pulsar.PulsarException as exc:
            raise DriverError(
                f"cannot subscribe {self.name!r} ({kind.value}) to {label}: "
                f"{type(exc).__name__} ({exc}); is the broker at "
                f"{redact_url(self.options.service_url)} up?"
            ) from None
        self._readers.append(_Reader(self, consumer, kind, tuple(channels)))

    async def _open_matching(self) -> None:
        """A consumer on the channels of the namespace the pattern matches that no consumer
        reads yet (pulsar-client's own pattern consumer looks only every 60 s)."""
        assert self._pattern is not None
        read = set(self._channels())
        found = await asyncio.to_thread(self._admin.channels)
        matched = [c for c in found if self._pattern.fullmatch(c) and c not in read]
        if matched and not self.closed:
            await self._open(matched, self.sub_options.type)
            log.info("Pulsar subscription %s reads %s", self.name, matched)

    async def start(self) -> None:
        """Create the consumers (retry channels: Shared, which honours deliver-at times);
        raises SubscriptionBusyError when Pulsar refuses one."""
        spec = self._spec
        main = [c for c in spec.channels if c not in spec.retry_channels]
        retry = [c for c in spec.channels if c in spec.retry_channels]
        try:
            if main:
                await self._open(main, self.sub_options.type)
            if retry:
                await self._open(retry, SubscriptionType.SHARED)
            if self._pattern is not None:
                await self._open_matching()
        except BaseException:
            await self.close()
            raise
        self._watcher = asyncio.create_task(self._watch(), name=f"pulsar-watch:{self.name}")

    async def _watch(self) -> None:
        """Every second, each consumer's connection; every ``_LAG_EVERY`` s, the backlog
        (``status().lag``); with a pattern, every ``pattern_discovery`` s, new topics."""
        lag_due = 0.0
        discovery_due = time.monotonic() + self.sub_options.pattern_discovery
        while not self.closed:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            if self._pattern is not None and now >= discovery_due:
                discovery_due = now + self.sub_options.pattern_discovery
                try:
                    await self._open_matching()
                    self._discovery_error = ""
                except (DriverError, OSError) as exc:
                    self._discovery_error = f"pattern discovery failed: {exc}"
                    log.warning("Pulsar subscription %s: %s", self.name, self._discovery_error)
            if now >= lag_due:
                lag_due, counts = now + _LAG_EVERY, {}
                with contextlib.suppress(DriverError):  # the admin API does not answer
                    counts = await self._backlog()
                known = [n for n in counts.values() if n is not None]
                self._lag = sum(known) if known and len(known) == len(counts) else None
            for reader in self._readers:
                reader.watch(now)

    async def _backlog(self) -> dict[str, int | None]:
        """The subscription's backlog per channel, from the admin API's topic stats (None:
        unknown)."""
        return await asyncio.to_thread(self._admin.backlog, self._channels(), self.name)

    # -- the contract ------------------------------------------------------------------------

    def fail(self, why: str) -> None:
        """This member cannot go on: every fetch raises from now on (on the loop)."""
        self._fatal = why
        text = f"Pulsar subscription {self.name!r} cannot go on: {why}"
        self.buffer.fail(DriverError(text, retriable=False))

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        """Wait for 1..max_count deliveries; ``[]`` once closed."""
        return await self.buffer.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Acks and nacks, per consumer."""
        by_reader: dict[_Reader, list[PulsarDelivery]] = {}
        reader: _Reader | None = None
        group: list[PulsarDelivery] = []
        for delivery in deliveries:
            if not isinstance(delivery, PulsarDelivery):
                raise DriverError(f"{delivery!r} was not delivered by this Pulsar subscription")
            if delivery.outcome is None:
                continue
            if delivery._reader is not reader:  # a look-up only where the consumer changes
                reader = delivery._reader
                group = by_reader.setdefault(reader, [])
            group.append(delivery)
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
        counts = await self._backlog()
        return {channel: n for channel, n in counts.items() if n is not None} or None

    def status(self) -> SubscriptionStatus:
        assignment = [f"{','.join(r.channels)} ({r.kind.value})" for r in self._readers]
        if self._pattern is not None:
            assignment.append(f"pattern {self._pattern.pattern} ({self.sub_options.type.value})")
        errors = [r.error for r in self._readers] + [self._discovery_error, self._fatal]
        return SubscriptionStatus(
            assignment=tuple(assignment), error="; ".join(e for e in errors if e), lag=self._lag
        )

    async def close(self) -> None:
        """Close the consumers (unsettled messages go back to the subscription); an
        ephemeral subscription is then deleted, so the broker retains nothing for it."""
        if self.closed:
            return
        self.closed = True
        self.buffer.close()
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.shield(self._close_all())  # to the end, also when the caller is cancelled

    async def _close_all(self) -> None:
        for reader in self._readers:
            await reader.close()
        if self._spec.ephemeral:
            channels = self._channels()
            await asyncio.to_thread(self._admin.delete_subscription, channels, self.name)
        self._on_close(self)
