"""The receive side: one action's consumer group member(s), Parallel-Consumer style.

Each group (the subscription's, and ``<group>.retry`` for the retry channels under
cooperative-sticky) is read by a :class:`~.member.Member`; partition state, deliveries,
commits and the watchdog live on the event loop. A partition's commit never passes an
unsettled delivery (:mod:`.offsets`). Design: docs/engines/kafka.md, section "Internals".
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException, Message

from ...driver import (
    Delivery,
    HeaderPairs,
    Outcome,
    PairHeaders,
    RawRecord,
    RecordBatch,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from ...errors import DriverError
from ..kit.buffer import DeliveryBuffer
from .member import Member, Position, moving
from .offsets import PartitionState, decode_acked
from .options import KafkaOptions, KafkaSubscriptionOptions, redact


class Run:
    """Records of one partition next to each other in the buffer (or a batch): their
    messages and offsets, in order, and the delivery count they are handed out with. Made a
    delivery or a record batch only when handed out; no object per record."""

    __slots__ = ("count", "messages", "offsets", "state")

    def __init__(
        self, state: PartitionState, messages: list[Message], offsets: list[int], count: int
    ) -> None:
        self.state = state
        self.messages = messages
        self.offsets = offsets
        self.count = count

    def __len__(self) -> int:
        return len(self.offsets)


LagReader = Callable[[str, Sequence[str], str | None, bool], Awaitable[dict[str, int]]]
"""``(group, topics, pattern, earliest)`` -> the group's lag per topic."""

log = logging.getLogger(__name__)

_COMMIT_INTERVAL = 0.05
"""Seconds between two commits of a subscription (each covers all changes since)."""
_FIRST_LAG_WAIT = 3.0
"""Seconds ``lag()`` waits for the members' first measurement after their assignment."""
_CLOSE_MARGIN = 30.0
"""Seconds past ``revoke_timeout`` that close waits for a member to leave its group."""
_MAX_REPLACEMENTS = 3
_REPLACEMENT_WINDOW = 600.0
"""Members of one subscription replaced this many times within this many seconds: the
cause is not transient, the subscription fails (restart the receiver after fixing it)."""
_COORDINATOR_BACKOFF_MAX = 600.0
_RUN_JOIN = 1000
"""Records a buffered run may hold for more to join it (a fetch that takes part of a run
moves the rest down: that stays short however large ``buffer`` is)."""


def _open_run(ready: Sequence[Run], state: PartitionState) -> Run | None:
    """The buffer's last run when it holds first deliveries of ``state`` and can take more
    records (fewer than ``_RUN_JOIN``), else None."""
    last = ready[-1] if ready else None
    if last is None or last.state is not state or last.count != 1:
        return None
    return last if len(last.offsets) < _RUN_JOIN else None


_HEADERS = operator.methodcaller("headers")
"""``message.headers()`` called from C, which raises at once for a name that is not UTF-8
(the interpreter's fast call path passes confluent-kafka's pending error on unchecked)."""


_READERS = (Message.key, Message.value, Message.headers)
"""The client's accessors, for a list of its own messages read by ``map`` (C loops calling
them as functions: ``methodcaller`` makes a bound method and an argument tuple per call)."""
_ANY_READERS = (operator.methodcaller("key"), operator.methodcaller("value"), _HEADERS)
"""The same for messages of another class (a subclass's override is called)."""


_NONE: HeaderPairs = ()
"""A record's headers when it has none (the client's ``headers()`` returns None)."""


def _unreadable(message: Any) -> list[tuple[str, bytes]]:
    """A record whose header name confluent-kafka cannot decode: its headers are replaced by
    none (read again, the half-built list it keeps crashes the process), and a warning says
    so. Returns the record's headers now: none."""
    message.set_headers([])
    log.warning(
        "Kafka record %s-%s-%s: a header name is not UTF-8; handed out without headers",
        message.topic(),
        message.partition(),
        message.offset(),
    )
    return []


def _timestamp(message: Any) -> float | None:
    """The broker's time of the record, seconds since the epoch (None when unknown)."""
    ts_type, ts = message.timestamp()
    return ts / 1000 if ts_type else None


class KafkaDelivery(Delivery):
    """A record handed to the core; ``_sub`` is its subscription until settle applied it.
    ``coordinates`` and ``timestamp`` are read from the message when asked."""

    __slots__ = ("_offset", "_partition", "_sub", "native")

    def __init__(
        self,
        sub: KafkaSubscription,
        partition: PartitionState,
        message: Message,
        offset: int,
        delivery_count: int,
    ) -> None:
        # Hot path: set the base class's slots directly rather than through super(). The
        # headers are the client's pairs read-only (PairHeaders: no dict per record); none
        # when a name is not UTF-8 (:func:`_unreadable`).
        try:
            pairs = _HEADERS(message)
        except (SystemError, ValueError):  # a name confluent-kafka cannot decode
            pairs = _unreadable(message)
        key = message.key() or b""
        try:  # UTF-8 keys (the usual): a plain decode, without the error handler's cost
            text = key.decode()
        except UnicodeDecodeError:  # a key that is not UTF-8: kept, escaped
            text = key.decode("utf-8", "surrogateescape")
        self.record = RawRecord(
            partition.key[0], text, PairHeaders(pairs or _NONE), message.value() or b""
        )
        self.delivery_count = delivery_count
        self.outcome = None
        self.delay = 0.0
        self._offset = offset
        self._sub: KafkaSubscription | None = sub
        self._partition = partition
        self.native: Message = message

    # Read-only here: only the driver sets a delivery's coordinates and time.
    @property
    def coordinates(self) -> str:  # type: ignore[override]
        """``<topic>-<partition>-<offset>``."""
        topic, number = self._partition.key
        return f"{topic}-{number}-{self._offset}"

    @property
    def timestamp(self) -> float | None:  # type: ignore[override]
        return _timestamp(self.native)


class KafkaRecordBatch(RecordBatch):
    """Records handed out together (:meth:`KafkaSubscription.fetch_records`): the core's
    lists, and per partition the run of offsets they came from, settled as ranges."""

    __slots__ = ("_firsts", "_runs", "_sub")

    def __init__(self, sub: KafkaSubscription, runs: list[Run]) -> None:
        # Hot path: the base class's slots set here (not through super()), each list built
        # by a comprehension or per run, the headers as :class:`KafkaDelivery` reads them.
        self.outcome = None
        self.taken = set()
        self._sub: KafkaSubscription | None = sub
        self._runs = runs
        self._firsts: list[int] = []
        """The index here of each run's first record."""
        natives: list[Message] = []
        channels: list[str] = []
        for run in runs:
            self._firsts.append(len(natives))
            natives += run.messages
            channels += [run.state.key[0]] * len(run.messages)
        self.natives = natives  # type: ignore[assignment]
        self.channels = channels
        # Read by C loops: the client's messages (the usual) with its accessors.
        exact = list(map(type, natives)).count(Message) == len(natives)
        key_of, value_of, headers_of = _READERS if exact else _ANY_READERS
        keys: list[Any] = list(map(key_of, natives))
        try:  # UTF-8 keys (the usual): a plain decode, without the error handler's cost
            self.keys = list(map(bytes.decode, keys))
        except (TypeError, UnicodeDecodeError):  # a null key, or one that is not UTF-8
            self.keys = [key.decode("utf-8", "surrogateescape") if key else "" for key in keys]
        bodies: list[Any] = list(map(value_of, natives))
        self.bodies = [body or b"" for body in bodies] if None in bodies else bodies
        # The client's lists as they come (the core reads them); the loop goes on past a
        # record whose header name confluent-kafka cannot decode.
        out: list[Any] = []
        reading = map(headers_of, natives)
        while True:
            try:
                out.extend(reading)
                break
            except (SystemError, ValueError):
                out.append(_unreadable(natives[len(out)]))
        self.headers = [pairs or _NONE for pairs in out] if None in out else out

    def _delivery(self, index: int) -> Delivery:
        sub = self._sub
        if sub is None:
            raise IndexError(f"record {index} of a settled batch")
        at = bisect_right(self._firsts, index) - 1
        run = self._runs[at]
        offset = run.offsets[index - self._firsts[at]]
        return KafkaDelivery(
            sub, run.state, run.messages[index - self._firsts[at]], offset, run.count
        )

    def timestamp(self, index: int) -> float | None:
        return _timestamp(self.natives[index])

    def remaining(self) -> list[Run]:
        """Per partition run: its records not taken out (the runs themselves when none
        was)."""
        taken = self.taken
        if not taken:
            return self._runs
        out = []
        for run, first in zip(self._runs, self._firsts, strict=True):
            kept = [i for i in range(len(run)) if first + i not in taken]
            if kept:
                messages, offsets = run.messages, run.offsets
                out.append(
                    Run(
                        run.state,
                        [messages[i] for i in kept],
                        [offsets[i] for i in kept],
                        run.count,
                    )
                )
        return out


class KafkaSubscription(Subscription):
    """One action's consumer-group member(s); see the module docstring for guarantees."""

    def __init__(
        self,
        options: KafkaOptions,
        spec: SubscriptionSpec,
        sub_options: KafkaSubscriptionOptions | None,
        scrub: Callable[[str], str] = str,
        forget: Callable[[Sequence[str]], Awaitable[None]] | None = None,
        lag_of: LagReader | None = None,
    ) -> None:
        self._forget = forget
        self._lag_of = lag_of
        self._options = options
        self._spec = spec
        self._sub_options = sub_options = sub_options or KafkaSubscriptionOptions()
        self._scrub = scrub
        self.group = sub_options.group or spec.group
        retry = set(spec.retry_channels) & set(spec.channels)
        self.retry_group: str | None = None
        self._plan = [(self.group, list(spec.channels))]
        if sub_options.separate_retry_group and retry:
            # cooperative-sticky balances a group's total partition count, not each topic.
            self.retry_group = f"{self.group}.retry"
            main = [c for c in spec.channels if c not in retry]
            self._plan = [(self.group, main), (self.retry_group, sorted(retry))]
        if spec.pattern:
            self._plan[0][1].append(f"^({spec.pattern})$")
        self._plan = [(group, topics) for group, topics in self._plan if topics]
        self._prefetch = max(1, spec.prefetch)
        self._buffer_high = max(sub_options.buffer, self._prefetch)
        self._buffer_low = self._buffer_high // 2
        self._members: list[Member] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._partitions: dict[tuple[str, int], PartitionState] = {}
        self._buffer: DeliveryBuffer[Run, Any] = DeliveryBuffer(self._take)
        self._buffered = 0
        """Records in the buffer's runs (``len(self._buffer)`` counts runs)."""
        self._as_records = False
        """Set by the first :meth:`fetch_records`: the buffer hands out record batches."""
        self._unsettled = 0
        self._revoke_progress = asyncio.Event()
        self._dirty: set[PartitionState] = set()
        self._committing: asyncio.Future[list[Any]] | None = None
        """The commit handed to the consumer threads and not answered yet (one at a time)."""
        self._commit_failure: DriverError | None = None
        self._commit_timer: asyncio.TimerHandle | None = None
        self._last_commit = 0.0
        self._fatal: str | None = None
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None
        self._replaced_at: deque[float] = deque()
        self._earlier: dict[tuple[str, int], PartitionState] = {}
        """Partitions lost (or left by a replaced member) with what was settled and maybe not
        committed; the next assignment of the partition inherits it."""
        self._abandoned: list[asyncio.Future[bool]] = []

    def __repr__(self) -> str:
        config = self._options.consumer(self.group, self._spec.start, self._sub_options)
        shown = {k: v for k, v in redact(config).items() if not callable(v)}
        return f"KafkaSubscription(group={self.group!r}, config={shown!r})"

    @property
    def last_error(self) -> str | None:
        """The current problem (a dead or stalled thread, no coordinator, an error
        librdkafka reports, a group that does not settle, a fetch stall), or None."""
        if self._fatal is not None:
            return self._fatal
        margin = self._options.poll_stall_timeout
        rules: list[Callable[[Member], str | None]] = [
            lambda m: self._describe(m, p) if (p := m.problem(margin)) else None,
            lambda m: m.replacing,
            lambda m: self._describe_group(m, t[0]) if (t := m.coordinator_problem()) else None,
            lambda m: m.last_error or m.stuck,
            lambda m: self._describe_group(m, t) if (t := m.fetch_problem()) else None,
        ]
        for rule in rules:
            for member in self._members:
                if problem := rule(member):
                    return problem
        return None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the group(s); return after the first assignment (or ``assignment_timeout``)."""
        if not self._plan:
            raise DriverError("a Kafka subscription needs channels or a pattern", retriable=False)
        loop = asyncio.get_running_loop()
        self._loop = loop
        try:
            for group, topics in self._plan:
                self._members.append(self._new_member(group, topics))
            self._watchdog = loop.create_task(
                self._watch(), name=f"hexa-kafka-watchdog-{self.group}"
            )
            joined = asyncio.gather(*(m.assigned_once.wait() for m in self._members))
            ended: list[asyncio.Future[Any]] = [m.done for m in self._members]  # or closed
            try:
                await asyncio.wait(
                    [joined, *ended],
                    timeout=self._options.assignment_timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                joined.cancel()
            if not self._closed and self._fatal is None and not self.status().joined:
                log.warning(
                    "Kafka group %r: no partition assignment yet (%s); consuming will start "
                    "when the group is joined",
                    self.group,
                    self.last_error or "no error reported",
                )
        except BaseException:  # refused, or cancelled while joining: leave what was joined
            await self.close()
            raise

    def _new_member(self, group: str, topics: list[str]) -> Member:
        """A started member of ``group`` (DriverError when librdkafka refuses the config)."""
        assert self._loop is not None
        member = Member(
            self,
            self._loop,
            group=group,
            topics=topics,
            config=self._options.consumer(group, self._spec.start, self._sub_options),
            eager=self._sub_options.assignment != "cooperative-sticky",
            revoke_timeout=self._options.revoke_timeout,
            scrub=self._scrub,
            fallback_group=self.group if group == self.retry_group else None,
        )
        try:
            member.start()
        except KafkaException as exc:
            raise DriverError(
                f"cannot create the Kafka consumer for group {group!r}: "
                f"{self._scrub(exc.args[0].str())}",
                retriable=False,
            ) from None
        return member

    # -- watchdog ------------------------------------------------------------------------------

    def _describe_group(self, member: Member, problem: str) -> str:
        return f"kafka consumer of group {member.group!r} {problem}"

    def _describe(self, member: Member, problem: str) -> str:
        group = f" (group {member.group!r})" if member.group != self._spec.group else ""
        return f"kafka consumer thread for action {self._spec.group!r}{group} {problem}"

    async def _watch(self) -> None:
        """Replace members whose thread died or stalled (:meth:`Member.problem`), or that
        went without their coordinator past ``coordinator_timeout`` while the brokers
        answered (:meth:`Member.without_coordinator`)."""
        margin = self._options.poll_stall_timeout
        every = min(1.0, margin / 4) if margin > 0 else 1.0
        while not self._closed and self._fatal is None:
            await asyncio.sleep(every)
            for member in list(self._members):
                if self._closed:
                    break
                if (problem := member.problem(margin)) is not None:
                    self._replace(member, self._describe(member, problem))
                elif (trouble := member.coordinator_problem()) is not None:
                    text, since = trouble
                    bound = self._coordinator_bound(member)
                    if bound > 0 and member.without_coordinator(since, self._members) >= bound:
                        text = self._describe_group(member, text)
                        why = f"{text} (coordinator_timeout {bound:.0f} s)"
                        self._replace(member, why, counted=False)

    def _coordinator_bound(self, member: Member) -> float:
        """Seconds without the coordinator before ``member`` is replaced (0: never),
        doubled for every replacement in a row (:attr:`Member.in_a_row`)."""
        bound = self._options.coordinator_timeout
        if bound <= 0:
            return 0.0
        return float(min(bound * 2**member.in_a_row, max(bound, _COORDINATOR_BACKOFF_MAX)))

    def _replace(self, old: Member, reason: str, counted: bool = True) -> None:
        """Abandon ``old`` (logging its stack) and start a fresh member of its group.
        ``counted``: towards ``_MAX_REPLACEMENTS`` (a coordinator's absence is not)."""
        now = time.monotonic()
        while self._replaced_at and now - self._replaced_at[0] > _REPLACEMENT_WINDOW:
            self._replaced_at.popleft()
        if counted:
            log.error("%s; its stack:\n%s", reason, old.stack())
        self._abandoned.append(old.close(self._options.revoke_timeout + _CLOSE_MARGIN))
        if counted:
            if len(self._replaced_at) >= _MAX_REPLACEMENTS:
                self.on_fatal(
                    old,
                    f"{reason}; its consumer was replaced {len(self._replaced_at)} times within "
                    f"{_REPLACEMENT_WINDOW:.0f} s, so the cause is not transient: restart the "
                    "receiver after fixing it (the log holds the thread's stack)",
                )
                return
            self._replaced_at.append(now)
        try:
            new = self._new_member(old.group, old.topics)
        except DriverError as exc:
            self.on_fatal(old, f"{reason}; no new consumer: {exc}")
            return
        self._members[self._members.index(old)] = new
        new.replacing = f"{reason}; replacing it"  # until it is assigned
        new.in_a_row = old.in_a_row + (0 if counted else 1)
        log.warning("%s; replaced by a new consumer", reason)

    async def close(self) -> None:
        """Stop fetching, commit the positions, leave the group(s). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buffer.close()
        self._buffered = 0
        self._revoke_progress.set()  # a revoke waiting for in-flight work stops waiting
        for handle in (self._commit_timer, self._watchdog):
            if handle is not None:
                handle.cancel()
        bound = self._options.revoke_timeout + _CLOSE_MARGIN
        done: list[asyncio.Future[Any]] = [asyncio.shield(f) for f in self._abandoned]
        for member in self._members:
            if member.abandoned:
                continue  # its close future is in done already
            final = None  # stalled: its thread would never see the stop
            if member.problem(self._options.poll_stall_timeout) is None:
                held = self._partitions.values()
                final = _positions(s for s in held if s.member is member and not s.revoking)
            done.append(member.close(bound, final))
        try:
            await asyncio.wait_for(asyncio.gather(*done), bound)
        except TimeoutError:
            log.error("Kafka group %r: consumer close timed out; abandoning it", self.group)
        if self._forget is not None:
            await self._forget([self.group] + ([self.retry_group] if self.retry_group else []))

    # -- called by the members, on the event loop ----------------------------------------------

    def busy(self) -> bool:
        """Whether commands may come soon (deliveries out, positions to commit)."""
        return self._unsettled > 0 or bool(self._dirty) or self._committing is not None

    def on_assigned(self, member: Member, found: list[tuple[str, int, int, str]]) -> None:
        if member.abandoned:
            return
        member.in_a_row = 0
        for topic, partition, offset, metadata in found:
            key = (topic, partition)
            orphan = self._partitions.get(key)
            if orphan is not None:  # still held by an abandoned member: its work is redone
                self._drop([key], keep=True)  # (but what it settled is kept, below)
            state = PartitionState(key, member, offset, decode_acked(offset, metadata), metadata)
            if (earlier := self._earlier.pop(key, None)) is not None and state.inherit(earlier):
                self._dirty.add(state)  # commit what was settled and not committed
            self._partitions[key] = state
        if self._dirty:
            self._schedule_commit()
        member.assigned_once.set()
        member.replacing = None  # a replacement joined: health is clean

    def _held_by(self, member: Member, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Those of ``keys`` that ``member`` holds (a replaced member's late revoke or loss
        must not drop what its replacement holds now)."""
        partitions = self._partitions
        return [k for k in keys if k in partitions and partitions[k].member is member]

    def on_lost(self, member: Member, keys: list[tuple[str, int]]) -> None:
        self._drop(self._held_by(member, keys), keep=True)

    def on_no_topic(self, member: Member) -> None:
        """None of ``member``'s topics exists (none made yet, or deleted): it is joined,
        holding nothing; what it settled of partitions it lost was of deleted topics (one
        made again starts anew: its offsets went with it)."""
        self._earlier = {k: s for k, s in self._earlier.items() if s.member is not member}
        self.on_assigned(member, [])

    def on_fatal(self, member: Member, text: str) -> None:
        if self._fatal is None:
            self._fatal = f"Kafka group {member.group!r}: {text}"
            self._buffer.fail(DriverError(self._fatal, retriable=False))

    async def on_revoked(self, member: Member, keys: list[tuple[str, int]]) -> list[Position]:
        """Let the revoked partitions' in-flight work settle (up to ``revoke_timeout``);
        their positions to commit."""
        keys = self._held_by(member, keys)
        states = [self._partitions[k] for k in keys]
        for state in states:
            state.revoking = True
        self._keep_held()
        try:
            async with asyncio.timeout(self._options.revoke_timeout):
                while any(s.outstanding for s in states) and not self._closed:
                    self._revoke_progress.clear()
                    await self._revoke_progress.wait()
        except TimeoutError:
            log.warning(
                "Kafka group %r: abandoning %d unfinished events of revoked partitions "
                "after %.0f s; the new owner receives them again",
                member.group,
                sum(s.outstanding for s in states),
                self._options.revoke_timeout,
            )
        # While it waited, a replacement (or this member, once its thread stopped waiting)
        # may have been assigned some of these partitions again (on_assigned took over the
        # state): those are the new assignment's, untouched.
        keys = [s.key for s in states if self._partitions.get(s.key) is s]
        positions = _positions(self._partitions[k] for k in keys)
        self._drop(keys, keep=member.abandoned)  # its commit of these may well fail
        return positions

    def on_messages(self, member: Member, messages: list[Message]) -> None:
        """A consume call's records, handed over by ``member``'s thread (this list is the
        subscription's now): buffered as runs of their partitions, those of partitions not
        held (or revoked) and those received already dropped, errors reported."""
        if member.abandoned:
            return
        got = self._one_run(messages)
        if got is None:
            got = self._each_record(member, messages)
        if got:
            self._buffered += got
            member.clear_error()
        if self._buffered >= self._buffer_high:
            for m in self._members:
                m.room.clear()
        self._buffer.wake()

    def _one_run(self, messages: list[Message]) -> int | None:
        """The usual consume call (a held partition's records, in rising offsets past
        those received, no error, none to skip): checked and read by C loops and buffered
        as one run (or joined to the last one), no Python step per record; their count.
        None for any other call, left to :meth:`_each_record`."""
        count = len(messages)
        if not count or list(map(type, messages)).count(Message) != count:
            return None  # (another class: a test's stand-in)
        first = messages[0]
        topic, number = first.topic(), first.partition()
        state = self._partitions.get((topic, number))  # type: ignore[arg-type]
        if (
            state is None
            or state.revoking
            or state.skip
            or any(map(Message.error, messages))  # (a KafkaError is true; compared, it raises)
            or list(map(Message.partition, messages)).count(number) != count
            or list(map(Message.topic, messages)).count(topic) != count
        ):
            return None
        offsets: list[int] = list(map(Message.offset, messages))  # type: ignore[arg-type]
        if offsets[0] < state.next_offset or not all(map(operator.lt, offsets, offsets[1:])):
            return None
        state.offsets.extend(offsets)
        state.next_offset = offsets[-1] + 1
        ready = self._buffer.items
        last = _open_run(ready, state)
        if last is not None:
            last.messages += messages
            last.offsets += offsets
        else:
            ready.append(Run(state, messages, offsets, 1))
        return count

    def _each_record(self, member: Member, messages: list[Message]) -> int:
        """:meth:`on_messages` record by record: runs of several partitions, errors,
        records received already or to skip, partitions not held; the count buffered."""
        partitions = self._partitions
        ready = self._buffer.items
        got = 0
        # Hot path: the partition's state is looked up once per run of its records (consume
        # returns a partition's records together); ``top`` is the run's next offset, stored
        # on the state when the run ends. A run's records join the buffer's last run when
        # that is of the same partition and first handed out, else a new run made at its
        # first record (``run`` None until then).
        state: PartitionState | None = None
        topic: Any = None
        number: Any = None
        top = 0
        received: Any = None
        run: Run | None = None
        add_message: Any = None
        add_offset: Any = None
        for message in messages:
            if message.error() is not None:
                member.on_error(message.error())  # type: ignore[arg-type]
                continue
            if message.partition() != number or message.topic() != topic:
                if state is not None:
                    state.next_offset = top
                topic, number = message.topic(), message.partition()
                state = partitions.get((topic, number))
                if state is not None and state.revoking:
                    state = None
                if state is not None:
                    top, received = state.next_offset, state.offsets.append
                run = None
            if state is None:
                continue
            offset: int = message.offset()  # type: ignore[assignment]
            if offset < top:
                continue  # already received in this assignment
            top = offset + 1
            received(offset)
            if state.skip and offset in state.skip:
                # Acked by the previous owner above its committed offset: finished already.
                state.skip.discard(offset)
                state.next_offset = top  # complete() may look at it
                state.complete(offset)
                self._dirty.add(state)
                continue
            if run is None:
                run = _open_run(ready, state)
                if run is None:
                    run = Run(state, [], [], 1)
                    ready.append(run)
                add_message, add_offset = run.messages.append, run.offsets.append
            add_message(message)
            add_offset(offset)
            got += 1
        if state is not None:
            state.next_offset = top
        return got

    # -- loop internals ------------------------------------------------------------------------

    def _drop(self, keys: Sequence[tuple[str, int]], keep: bool = False) -> None:
        """Give the partitions up; ``keep``: their states (dropped without a commit that
        surely got through) for their next assignment here (:meth:`PartitionState.inherit`)."""
        dropped = False
        for key in keys:
            if (state := self._partitions.pop(key, None)) is not None:
                state.revoking = True
                self._dirty.discard(state)
                dropped = True
                if keep:
                    self._earlier[key] = state
        if dropped:
            self._keep_held()
            self._maybe_resume()

    def _keep_held(self) -> None:
        """Drop the buffered runs of partitions revoked or given up."""
        self._buffer.keep(_not_revoking)
        self._buffered = sum(map(len, self._buffer.items))

    def _maybe_resume(self) -> None:
        if self._buffered <= self._buffer_low:
            for member in self._members:
                if not member.room.is_set():
                    member.room.set()

    def _finished(self, state: PartitionState, offsets: list[int], ack: bool) -> bool:
        """Account settled ``offsets`` of ``state`` (an ack finishes them); True when they
        are to be handed out again (a nack, the partition still held, not closing)."""
        self._unsettled -= len(offsets)
        state.outstanding -= len(offsets)
        if ack:
            state.complete_all(offsets)
        if state.revoking:
            self._revoke_progress.set()
            return False
        if ack:
            self._dirty.add(state)
        return not ack and not self._closed

    def _give_back(self, runs: list[Run]) -> None:
        """Nacked records (their delay passed): first in line again, in their order (those
        of a partition revoked since, or all once closed, are dropped)."""
        for run in reversed(runs):
            if not run.state.revoking and not self._closed:
                self._buffer.appendleft(run)
                self._buffered += len(run)

    def _schedule_commit(self) -> None:
        """Commit the changed positions soon: at most one commit in flight, and at most one
        every ``_COMMIT_INTERVAL`` seconds (each commit covers everything changed since)."""
        if self._committing or self._commit_timer or self._closed or not self._dirty:
            return
        assert self._loop is not None
        delay = max(0.0, self._last_commit + _COMMIT_INTERVAL - self._loop.time())
        self._commit_timer = self._loop.call_later(delay, self._send_commit)

    def _send_commit(self) -> None:
        self._commit_timer = None
        if self._closed or not self._dirty:
            return
        assert self._loop is not None
        self._last_commit = self._loop.time()
        dirty, self._dirty = self._dirty, set()
        wanted = {s: s.position() for s in dirty if not s.revoking}
        by_member: dict[Member, list[Position]] = {}
        for state, position in wanted.items():
            if position is not None:
                member: Any = state.member
                by_member.setdefault(member, []).append((*state.key, *position))
        if not by_member:
            return
        done = asyncio.gather(*(m.commit(p) for m, p in by_member.items()), return_exceptions=True)
        self._committing = done
        done.add_done_callback(lambda f: self._committed(f, dirty, wanted))

    def _committed(
        self,
        done: asyncio.Future[list[Any]],
        dirty: set[PartitionState],
        wanted: dict[PartitionState, tuple[int, str] | None],
    ) -> None:
        self._committing = None
        failed = [r for r in done.result() if isinstance(r, BaseException)]
        if failed:  # committed again; refused while partitions move is no error
            self._dirty.update(s for s in dirty if not s.revoking)
            if (first := next((r for r in failed if not moving(r)), None)) is not None:
                text = first.args[0].str() if isinstance(first, KafkaException) else repr(first)
                self._commit_failure = DriverError(
                    f"Kafka group {self.group!r}: committing offsets failed: {self._scrub(text)}"
                )
        else:
            for state, position in wanted.items():
                if position is not None:
                    state.committed, state.committed_metadata = position
        self._schedule_commit()

    # -- the contract ----------------------------------------------------------------------------

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        """1..max_count deliveries (at most ``prefetch`` unsettled), [] once closed;
        DriverError(retriable=False) once a member cannot go on (:mod:`.member`)."""
        return await self._buffer.fetch(max_count)

    async def fetch_records(self, max_count: int) -> RecordBatch | None:
        """What :meth:`fetch` would hand out, as one record batch; None once closed."""
        self._as_records = True
        out = await self._buffer.fetch(max_count)
        return out[0] if out else None

    def _take(self, ready: deque[Run], max_count: int) -> list[Any]:
        """Up to ``max_count`` buffered records within the prefetch window, counted out of
        their partitions, as deliveries or (after :meth:`fetch_records`) one record batch."""
        count = min(max_count, self._prefetch - self._unsettled, self._buffered)
        if count <= 0:
            return []
        runs: list[Run] = []
        left = count
        while left:
            run = ready[0]
            size = len(run.offsets)
            if size <= left:
                runs.append(ready.popleft())
            else:  # the run's head; its tail stays first in line
                messages, offsets = run.messages, run.offsets
                runs.append(Run(run.state, messages[:left], offsets[:left], run.count))
                del messages[:left], offsets[:left]
                size = left
            run.state.outstanding += size
            left -= size
        self._buffered -= count
        self._unsettled += count
        self._maybe_resume()
        if self._as_records:
            return [KafkaRecordBatch(self, runs)]
        return [
            KafkaDelivery(self, run.state, message, offset, run.count)
            for run in runs
            for message, offset in zip(run.messages, run.offsets, strict=True)
        ]

    def _claim(self, settled: Any, kind: type[KafkaDelivery | KafkaRecordBatch]) -> bool:
        """Whether ``settled`` (a ``kind``) is this subscription's, settled and not applied
        yet; it is then marked applied (settling is idempotent)."""
        if not isinstance(settled, kind) or settled._sub is not self or settled.outcome is None:
            return False
        settled._sub = None
        return True

    def _settled(self, acked: dict[PartitionState, list[int]]) -> None:
        """After a settlement: the ``acked`` offsets finished (per partition, as a run), room
        in the prefetch window, a refused commit raised (its partitions are committed
        again), the moved positions committed soon."""
        for state, offsets in acked.items():
            self._finished(state, offsets, True)
        self._buffer.wake()
        if self._commit_failure is not None:
            failure, self._commit_failure = self._commit_failure, None
            raise failure
        self._schedule_commit()

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Finish the acked offsets, schedule the nacked records again; the positions that
        moved are committed within ``_COMMIT_INTERVAL`` s on the consumer thread (a crash
        before that: delivered again), a refused commit raised (DriverError) by the next call."""
        acked: dict[PartitionState, list[int]] = {}
        back: dict[float, list[Run]] = {}  # by delay
        delivery: Any
        ack = Outcome.ACK
        last: PartitionState | None = None
        run: list[int] = []
        for delivery in deliveries:
            # Hot path: _claim inlined; a partition's run of acks appended to one list.
            if (
                not isinstance(delivery, KafkaDelivery)
                or delivery._sub is not self
                or delivery.outcome is None
            ):
                continue
            delivery._sub = None
            state, offset = delivery._partition, delivery._offset
            if delivery.outcome is ack:
                if state is not last:
                    last, run = state, acked.setdefault(state, [])
                run.append(offset)
            elif self._finished(state, [offset], False):
                item = Run(state, [delivery.native], [offset], delivery.delivery_count + 1)
                back.setdefault(delivery.delay, []).append(item)
        for delay, items in back.items():
            asyncio.get_running_loop().call_later(delay, self._give_back, items)
        self._settled(acked)

    async def settle_records(self, batches: Sequence[RecordBatch]) -> None:
        """:meth:`settle` for record batches: an acked batch finishes its offsets as runs,
        one per partition; a nacked one goes back to the front of the buffer at once."""
        acked: dict[PartitionState, list[int]] = {}
        back: list[Run] = []
        batch: Any
        for batch in batches:
            if not self._claim(batch, KafkaRecordBatch):
                continue
            for run in batch.remaining():
                state = run.state
                if batch.outcome is Outcome.ACK:
                    acked.setdefault(state, []).extend(run.offsets)
                elif self._finished(state, run.offsets, False):
                    messages, offsets = list(run.messages), list(run.offsets)
                    back.append(Run(state, messages, offsets, run.count + 1))
        self._give_back(back)
        self._settled(acked)

    async def lag(self) -> Mapping[str, int] | None:
        """The group's (and its retry group's) lag per topic: with ``group_lag``, read with
        the admin client; else this process's partitions, from cached watermarks."""
        if self._lag_of is None:
            # Right after an assignment the members have not measured yet: wait for that
            # (briefly) rather than answer "unknown" for a group that has its partitions.
            for _ in range(int(_FIRST_LAG_WAIT / 0.05)):
                status = self.status()
                if self._closed or not self._members or not status.joined or status.lag is not None:
                    break
                await asyncio.sleep(0.05)
            return await super().lag()
        problem = self._fatal or next((m.last_error for m in self._members if m.last_error), None)
        if problem is not None:
            # No admin requests while the cluster is unreachable: they only time out, and
            # admin requests timing out while the broker restarted met librdkafka's
            # enq_once assertion (an abort). The receiver keeps the last sample.
            raise DriverError(f"lag not sampled while the group reports a problem: {problem}")
        out: dict[str, int] = {}
        earliest = self._spec.start == "earliest"
        for group, topics in self._plan:
            names = [t for t in topics if not t.startswith("^")]
            pattern = self._spec.pattern if len(names) < len(topics) else None
            for topic, count in (await self._lag_of(group, names, pattern, earliest)).items():
                out[topic] = out.get(topic, 0) + count
        return out

    def status(self) -> SubscriptionStatus:
        lags = [m.lag for m in self._members if m.lag is not None]
        return SubscriptionStatus(
            assignment=tuple(f"{t}-{p}" for t, p in sorted(self._partitions)),
            error=self.last_error or "",
            lag=sum(lags) if lags else None,
            joined=all(m.assigned_once.is_set() for m in self._members),
        )


def _not_revoking(run: Run) -> bool:
    return not run.state.revoking


def _positions(states: Iterable[PartitionState]) -> list[Position]:
    """What to commit for ``states`` (a partition's last commit when nothing moved; nothing
    for one that has no position yet)."""
    return [
        (*s.key, *(s.position() or (s.committed, s.committed_metadata)))
        for s in states
        if s.watermark() >= 0
    ]
