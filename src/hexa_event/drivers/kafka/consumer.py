"""The receive side: a Parallel-Consumer-style member of one consumer group.

Threads: one daemon thread owns the confluent-kafka ``Consumer`` (librdkafka consumers are
driven from one thread). It loops ``consume(batch, 0.1)``, hands each batch to the event
loop with one ``call_soon_threadsafe``, and runs commands (store offsets, pause, resume)
between calls. Rebalance callbacks run on that thread; a revoke blocks it while the loop
finishes (bounded) the revoked partitions' work, then commits their watermarks
synchronously. The loop never waits on the thread, so this cannot deadlock.

Offsets (the Parallel Consumer model): per assigned partition the loop keeps the offsets it
received and not yet finished, in order. A record is finished when its delivery is acked.
The stored (and auto-committed) offset of a partition is always its lowest unfinished
offset, never "highest seen", so a failed or slow record is never skipped because a later
one succeeded. Deliveries may be settled in any order.

Commits: watermarks are stored as events finish and committed by librdkafka every second,
on revoke (synchronously, after the revoked partitions' in-flight work finished or
``revoke_timeout`` passed) and at close. Partitions *lost* (session expired, e.g. while the
broker restarts) are dropped without committing; their records since the last commit are
delivered again, with the same HEXA_EVENT_ID (at-least-once).

Backpressure: at most ``spec.prefetch`` deliveries are out unsettled; records received
beyond that wait locally. Above ``KafkaSubscriptionOptions.buffer`` of them the poll thread
stops taking records (librdkafka's own bounded prefetch fills and stops fetching) until half
drained; held longer than 3 s, it pauses every assigned partition and keeps polling, so
rebalances are served (pause discards librdkafka's prefetch, hence not at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ...driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from ...errors import DriverError
from .options import KafkaOptions, KafkaSubscriptionOptions, redact

log = logging.getLogger(__name__)

_POLL_TIMEOUT = 0.1
_HOLD_BEFORE_PAUSE = 3.0
_CONSUME_BATCH = 500
_STORE_DELAY = 0.05
_ERROR_LOG_INTERVAL = 10.0


class _Partition:
    """Loop-owned state of one assigned partition (a new object per assignment)."""

    __slots__ = ("done", "key", "next_offset", "offsets", "outstanding", "revoking", "stored")

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.offsets: deque[int] = deque()
        """Offsets received and not yet finished or below the watermark, ascending."""
        self.done: set[int] = set()
        self.next_offset = -1
        """Highest offset received + 1."""
        self.stored = -1
        self.outstanding = 0
        """Deliveries of this partition handed out and not settled."""
        self.revoking = False

    def complete(self, offset: int) -> None:
        offsets = self.offsets
        if offsets and offsets[0] == offset:
            offsets.popleft()
            done = self.done
            while offsets and offsets[0] in done:
                done.discard(offsets.popleft())
        else:
            self.done.add(offset)

    def watermark(self) -> int:
        """The offset to commit: the lowest unfinished one, else highest received + 1."""
        return self.offsets[0] if self.offsets else self.next_offset


class KafkaDelivery(Delivery):
    """A record handed to the core; ack finishes it, nack hands it out again later."""

    __slots__ = ("_message", "_offset", "_partition", "_settled", "_sub")

    def __init__(
        self,
        sub: KafkaSubscription,
        partition: _Partition,
        message: Message,
        offset: int,
        delivery_count: int,
    ) -> None:
        # Hot path: set the base class's slots directly rather than through super().
        topic, number = partition.key
        key: Any = message.key()
        headers: Any = message.headers()
        body: Any = message.value()
        ts_type, ts = message.timestamp()
        self.record = RawRecord(
            topic,
            key.decode("utf-8", "surrogateescape") if key else "",
            dict(headers) if headers else {},
            body or b"",
        )
        self.coordinates = f"{topic}-{number}-{offset}"
        self.delivery_count = delivery_count
        self.timestamp = ts / 1000 if ts_type else None
        self._offset = offset
        self._sub = sub
        self._partition = partition
        self._message = message
        self._settled = False

    @property
    def native(self) -> object:
        """The confluent_kafka.Message."""
        return self._message

    async def ack(self) -> None:
        """Finish the record: its offset may now be committed once all before it are."""
        if not self._settled:
            self._settled = True
            self._sub._settle(self, True, 0.0)

    async def nack(self, delay: float = 0.0) -> None:
        """Keep the record unfinished and hand it out again after ``delay`` seconds."""
        if not self._settled:
            self._settled = True
            self._sub._settle(self, False, delay)


class KafkaSubscription(Subscription):
    """One consumer-group member; see the module docstring for its guarantees."""

    def __init__(
        self,
        options: KafkaOptions,
        spec: SubscriptionSpec,
        sub_options: KafkaSubscriptionOptions | None,
    ) -> None:
        self._options = options
        self._spec = spec
        sub_options = sub_options or KafkaSubscriptionOptions()
        self.group = sub_options.group or spec.group
        self._config = options.consumer(self.group, spec.start, sub_options.consumer_config)
        self._config["error_cb"] = self._on_error
        self._prefetch = max(1, spec.prefetch)
        self._buffer_high = max(sub_options.buffer, self._prefetch)
        self._buffer_low = self._buffer_high // 2
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        # Thread-owned.
        self._owned: set[tuple[str, int]] = set()
        self._thread_paused = False
        # Loop-owned.
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._ready: deque[tuple[_Partition, Message, int, int]] = deque()
        """(partition state, message, offset, delivery count), in arrival order."""
        self._unsettled = 0
        self._room = threading.Event()
        """Set while the local buffer has room; the poll thread consumes only then."""
        self._room.set()
        self._wake = asyncio.Event()
        self._revoke_progress = asyncio.Event()
        self._dirty: set[_Partition] = set()
        self._store_handle: asyncio.TimerHandle | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._assigned_once = asyncio.Event()
        self._thread_done: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._last_error_log: dict[int, float] = {}
        self.last_error: str | None = None
        """The last error librdkafka reported (e.g. the broker is unreachable), or None."""

    def __repr__(self) -> str:
        shown = {k: v for k, v in redact(self._config).items() if not callable(v)}
        return f"KafkaSubscription(group={self.group!r}, config={shown!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group; return after the first assignment (or ``assignment_timeout``)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread_done = loop.create_future()
        try:
            consumer = Consumer(self._config)
        except KafkaException as exc:
            raise DriverError(
                f"cannot create the Kafka consumer for group {self.group!r}: {exc.args[0].str()}",
                retriable=False,
            ) from None
        self._consumer = consumer
        spec = self._spec
        topics = [f"^({spec.pattern})$"] if spec.pattern else list(spec.channels)
        if not topics:
            raise DriverError("a Kafka subscription needs channels or a pattern", retriable=False)
        consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._thread = threading.Thread(
            target=self._run, name=f"hexa-kafka-consumer-{self.group}", daemon=True
        )
        self._thread.start()
        try:
            await asyncio.wait_for(
                self._assigned_once.wait(), timeout=self._options.assignment_timeout
            )
        except TimeoutError:
            log.warning(
                "Kafka group %r: no partition assignment after %.0f s (%s); consuming will "
                "start when the group is joined",
                self.group,
                self._options.assignment_timeout,
                self.last_error or "no error reported",
            )

    async def close(self) -> None:
        """Stop fetching, store and commit the watermarks, leave the group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._revoke_progress.set()  # a revoke waiting for in-flight work stops waiting
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._ready.clear()
        self._store_now()
        self._stop.set()
        if self._thread_done is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._thread_done), self._options.revoke_timeout + 30
                )
            except TimeoutError:
                log.error("Kafka group %r: consumer close timed out; abandoning it", self.group)

    # -- the poll thread ---------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        loop = self._loop
        assert consumer is not None
        assert loop is not None
        try:
            held_since: float | None = None
            while not self._stop.is_set():
                self._run_commands(consumer)
                if not self._room.is_set():
                    # The local buffer is full. Stop consuming for a while (librdkafka keeps
                    # prefetching); past _HOLD_BEFORE_PAUSE pause the partitions (which drops
                    # librdkafka's prefetch) and keep polling so rebalances are served.
                    now = time.monotonic()
                    held_since = held_since or now
                    if now - held_since < _HOLD_BEFORE_PAUSE:
                        self._room.wait(_POLL_TIMEOUT)
                        continue
                    if not self._thread_paused:
                        self._thread_paused = True
                        with contextlib.suppress(KafkaException):
                            consumer.pause(consumer.assignment())
                else:
                    held_since = None
                    if self._thread_paused:
                        self._thread_paused = False
                        with contextlib.suppress(KafkaException):
                            consumer.resume(consumer.assignment())
                # Take what is there at once; block (briefly) only when nothing is.
                messages = consumer.consume(_CONSUME_BATCH, 0)
                if not messages:
                    first = consumer.poll(_POLL_TIMEOUT)
                    if first is None:
                        continue
                    messages = [first, *consumer.consume(_CONSUME_BATCH - 1, 0)]
                # Records of partitions revoked meanwhile are dropped on the loop, which
                # knows the current assignment (no per-record work on this thread).
                loop.call_soon_threadsafe(self._on_messages, messages)
            self._run_commands(consumer)
            consumer.close()
        except BaseException as exc:
            log.exception("Kafka group %r: the consumer thread failed", self.group)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_failure, exc)
        finally:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_thread_done)

    def _run_commands(self, consumer: Consumer) -> None:
        while True:
            try:
                command, arg = self._commands.get_nowait()
            except queue.Empty:
                return
            if command == "store":
                self._store_offsets(consumer, arg)

    def _store_offsets(self, consumer: Consumer, offsets: Sequence[tuple[str, int, int]]) -> None:
        owned = self._owned
        tps = [TopicPartition(t, p, o) for t, p, o in offsets if (t, p) in owned]
        if not tps:
            return
        try:
            consumer.store_offsets(offsets=tps)
        except KafkaException:
            for tp in tps:  # one partition was revoked meanwhile: store the others
                with contextlib.suppress(KafkaException):
                    consumer.store_offsets(offsets=[tp])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if self._thread_paused and partitions:
            consumer.pause(partitions)
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._owned.update(keys)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._assigned, keys)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._owned.difference_update(keys)
        loop = self._loop
        assert loop is not None
        offsets: list[tuple[str, int, int]] = []
        try:
            future = asyncio.run_coroutine_threadsafe(self._revoke(keys), loop)
            offsets = future.result(timeout=self._options.revoke_timeout + 5)
        except Exception:
            log.exception("Kafka group %r: revoke handling failed", self.group)
        tps = [TopicPartition(t, p, o) for t, p, o in offsets]
        if tps:
            try:
                consumer.store_offsets(offsets=tps)
            except KafkaException as exc:
                log.debug("Kafka group %r: store on revoke: %s", self.group, exc)
            try:
                consumer.commit(offsets=tps, asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning(
                        "Kafka group %r: commit of revoked partitions failed: %s",
                        self.group,
                        exc.args[0].str(),
                    )
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._owned.difference_update(keys)
        log.warning(
            "Kafka group %r lost partitions %s (session timeout?); their unfinished events "
            "will be delivered again",
            self.group,
            keys,
        )
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._drop, keys)
        consumer.incremental_unassign(partitions)

    def _on_error(self, err: KafkaError) -> None:
        text = f"{err.name()}: {err.str()}"
        self.last_error = text
        now = time.monotonic()
        last = self._last_error_log.get(err.code(), 0.0)
        if now - last >= _ERROR_LOG_INTERVAL:
            self._last_error_log[err.code()] = now
            log.warning("Kafka group %r: %s (librdkafka retries with backoff)", self.group, text)

    # -- on the event loop ---------------------------------------------------------------------

    def _assigned(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            self._partitions[key] = _Partition(key)
        self._assigned_once.set()

    def _drop(self, keys: Sequence[tuple[str, int]]) -> list[_Partition]:
        dropped = []
        for key in keys:
            state = self._partitions.pop(key, None)
            if state is not None:
                state.revoking = True
                self._dirty.discard(state)
                dropped.append(state)
        if dropped:
            self._ready = deque(item for item in self._ready if not item[0].revoking)
            self._maybe_resume()
        return dropped

    async def _revoke(self, keys: Sequence[tuple[str, int]]) -> list[tuple[str, int, int]]:
        states = [self._partitions[k] for k in keys if k in self._partitions]
        for state in states:
            state.revoking = True
        self._ready = deque(item for item in self._ready if not item[0].revoking)
        if not self._closed and any(s.outstanding for s in states):
            deadline = time.monotonic() + self._options.revoke_timeout
            while any(s.outstanding for s in states) and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "Kafka group %r: abandoning %d unfinished events of revoked partitions "
                        "after %.0f s; the new owner receives them again",
                        self.group,
                        sum(s.outstanding for s in states),
                        self._options.revoke_timeout,
                    )
                    break
                self._revoke_progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._revoke_progress.wait(), remaining)
        offsets = [(*s.key, s.watermark()) for s in states if s.watermark() >= 0]
        self._drop(keys)
        return offsets

    def _on_messages(self, messages: list[Message]) -> None:
        partitions = self._partitions
        ready = self._ready
        for message in messages:
            err = message.error()
            if err is not None:
                self._on_error(err)
                continue
            state = partitions.get((message.topic(), message.partition()))  # type: ignore[arg-type]
            if state is None or state.revoking:
                continue
            offset: int = message.offset()  # type: ignore[assignment]
            if offset < state.next_offset:
                continue  # already received in this assignment
            state.offsets.append(offset)
            state.next_offset = offset + 1
            ready.append((state, message, offset, 1))
        if len(ready) >= self._buffer_high:
            self._room.clear()
        self._wake.set()

    def _maybe_resume(self) -> None:
        if not self._room.is_set() and len(self._ready) <= self._buffer_low:
            self._room.set()

    def _settle(self, delivery: KafkaDelivery, done: bool, delay: float) -> None:
        self._unsettled -= 1
        state = delivery._partition
        state.outstanding -= 1
        if state.revoking:
            self._revoke_progress.set()
            if done:
                state.complete(delivery._offset)
            return
        if done:
            state.complete(delivery._offset)
            self._dirty.add(state)
            if self._store_handle is None and self._loop is not None:
                self._store_handle = self._loop.call_later(_STORE_DELAY, self._store_now)
        elif not self._closed and self._loop is not None:
            item = (state, delivery._message, delivery._offset, delivery.delivery_count + 1)
            handle: asyncio.TimerHandle | None = None

            def requeue() -> None:
                if handle is not None:
                    self._timers.discard(handle)
                if not state.revoking and not self._closed:
                    self._ready.appendleft(item)
                    self._wake.set()

            handle = self._loop.call_later(max(0.0, delay), requeue)
            self._timers.add(handle)
        self._wake.set()

    def _store_now(self) -> None:
        self._store_handle = None
        offsets = []
        for state in self._dirty:
            mark = state.watermark()
            if mark > state.stored and not state.revoking:
                state.stored = mark
                offsets.append((*state.key, mark))
        self._dirty.clear()
        if offsets:
            self._commands.put(("store", offsets))

    def _on_failure(self, exc: BaseException) -> None:
        self._failure = exc
        self._wake.set()

    def _on_thread_done(self) -> None:
        if self._thread_done is not None and not self._thread_done.done():
            self._thread_done.set_result(None)
        self._wake.set()

    # -- the contract ----------------------------------------------------------------------------

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        """Wait for 1..max_count deliveries (at most ``prefetch`` unsettled); [] once closed."""
        while True:
            if self._closed:
                return []
            if self._failure is not None:
                raise DriverError(
                    f"the Kafka consumer of group {self.group!r} failed: {self._failure!r}"
                )
            room = min(max_count, self._prefetch - self._unsettled)
            ready = self._ready
            if room > 0 and ready:
                out: list[Delivery] = []
                while ready and len(out) < room:
                    state, message, offset, count = ready.popleft()
                    if state.revoking:
                        continue
                    state.outstanding += 1
                    out.append(KafkaDelivery(self, state, message, offset, count))
                if out:
                    self._unsettled += len(out)
                    self._maybe_resume()
                    return out
            self._wake.clear()
            await self._wake.wait()

    @property
    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this member currently holds (loop view)."""
        return sorted(self._partitions)
