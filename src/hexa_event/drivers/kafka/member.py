"""One librdkafka consumer in one consumer group, driven from its own daemon thread.

Every call on the ``Consumer`` (consume, commit, pause, the rebalance callbacks) happens on
that thread; the event loop sends it commands and never waits on it. Health:
:meth:`Member.problem` (the watchdog), :meth:`Member.coordinator_problem` and
:meth:`Member.fetch_problem`. Design: docs/engines/kafka.md, section "Internals".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from .fetchwatch import FetchWatch
from .fetchwatch import describe as describe_starved

log = logging.getLogger(__name__)

_POLL_IDLE = 0.1
_POLL_BUSY = 0.002
"""Poll wait while the loop may send commands (librdkafka's poll cannot be woken)."""
_HOLD_BEFORE_PAUSE = 3.0
_CONSUME_BATCH = 500
_ERROR_LOG_INTERVAL = 10.0
_LAG_INTERVAL = 1.0
_DECODER = json.JSONDecoder()
STATS_INTERVAL = 3.0
"""Seconds between librdkafka's statistics (the group's state, a starved partition's)."""
COORDINATOR_DOWN_AFTER = 10.0
"""Seconds the statistics may show the group state other than ``up`` before health says so."""
STUCK_AFTER = 10.0
"""Seconds without partitions while the group rebalances before health calls it stuck."""
_COMMITTED_TIMEOUT = 10.0
_WARM_TIMEOUT = 5.0
"""Seconds an :class:`OffsetReader`'s first read (finding the coordinator) may take."""
_NOTHING_KEPT = 30.0
_COMMIT_ALLOWANCE = 60.0
"""Seconds a synchronous commit may take (librdkafka's socket.timeout.ms default)."""
_CALLBACK_ALLOWANCE = 5.0
_RECOVERY_AFTER = 1.0
"""Statistics taken at least this long after an error can tell that it is over."""
COMMIT_SLOW = 5.0
"""Seconds a commit may wait for the group coordinator before health says so."""
_COORDINATOR_CODES = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._WAIT_COORD,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}
"""Commit errors that mean the group's coordinator does not answer (or not as such)."""
_REBALANCE_CODES = {
    KafkaError._STATE,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
    KafkaError._ASSIGNMENT_LOST,
}
"""Commit errors of a partition that is moving: not written, committed again by its revoke
or the next commit (else its next owner redelivers from the last commit)."""
_FATAL_CODES = {
    KafkaError.INCONSISTENT_GROUP_PROTOCOL: (
        "the group's other members use another assignment protocol (an eager 'range' or "
        "'roundrobin' group, e.g. Go hexa-event/sarama, or a cooperative one): give every "
        "member the same KafkaSubscriptionOptions(assignment=...), or use another group"
    ),
    KafkaError.GROUP_AUTHORIZATION_FAILED: (
        "the broker refused this consumer group: grant the principal READ on the group"
    ),
    KafkaError.TOPIC_AUTHORIZATION_FAILED: (
        "the broker refused a topic: grant the principal READ (and DESCRIBE) on the topics"
    ),
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: (
        "the broker refused a cluster operation: check the principal's ACLs"
    ),
    KafkaError.SASL_AUTHENTICATION_FAILED: (
        "the broker refused the credentials: check sasl.username/sasl.password/mechanism"
    ),
    KafkaError._AUTHENTICATION: (
        "authentication failed: check the SASL/SSL settings (security.protocol, "
        "sasl.mechanism, credentials, certificates)"
    ),
}

Position = tuple[str, int, int, str]
"""(topic, partition, offset, metadata) to commit."""


def in_daemon(
    loop: asyncio.AbstractEventLoop, work: Callable[[], None], name: str, within: float
) -> asyncio.Future[bool]:
    """Run ``work`` on a daemon thread: the future is True once it returned, False when
    ``within`` seconds passed first (``work`` is then left to its thread)."""
    done: asyncio.Future[bool] = loop.create_future()

    def finish(result: bool) -> None:
        if not done.done():
            done.set_result(result)

    def run() -> None:
        try:
            work()
        finally:
            with contextlib.suppress(RuntimeError):  # the loop may be closed by now
                loop.call_soon_threadsafe(finish, True)

    threading.Thread(target=run, name=name, daemon=True).start()
    loop.call_later(within, finish, False)
    return done


def _lasting(since: float | None, holds: bool, now: float) -> tuple[float | None, float]:
    """Since when a condition ``holds`` (None: it does not), and for how long at ``now``."""
    if not holds:
        return None, -1.0
    since = now if since is None else since
    return since, now - since


def _group_stats(stats: str) -> dict[str, Any]:
    """The "cgrp" object of librdkafka's statistics, decoded alone (not every broker, topic
    and partition); ``{}`` when there is none."""
    at = stats.rfind('"cgrp":')
    try:
        cgrp = _DECODER.raw_decode(stats[at + len('"cgrp":') :].lstrip())[0] if at >= 0 else {}
    except ValueError:
        return {}
    return cgrp if isinstance(cgrp, dict) else {}


def moving(exc: BaseException) -> bool:
    """Whether a commit failed only because its partitions are moving (a rebalance)."""
    return isinstance(exc, KafkaException) and exc.args[0].code() in _REBALANCE_CODES


def _resolve(future: Future[None], err: KafkaError | None) -> None:
    """A commit's outcome (from any thread; the first one given counts)."""
    with contextlib.suppress(InvalidStateError):
        if err is None:
            future.set_result(None)
        else:
            future.set_exception(KafkaException(err))


class OffsetReader:
    """A consumer of a group that only reads its committed offsets (it never subscribes, so
    joins nothing), on a daemon thread of its own. It reads ``warm`` (None: nothing) at
    once, which finds the group's coordinator (docs/engines/kafka.md, "Internals"). One
    user at a time; :meth:`close` ends it."""

    def __init__(self, config: dict[str, Any], warm: TopicPartition | None, name: str) -> None:
        self._config = config
        self._warm = warm
        self._error: KafkaException | None = None
        """Why its consumer could not be made (then every read raises it)."""
        self._requests: queue.SimpleQueue[tuple[list[TopicPartition], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name=f"hexa-kafka-offsets-{name}", daemon=True).start()

    def committed(self, partitions: list[TopicPartition], within: float) -> list[TopicPartition]:
        """The group's committed offsets of ``partitions`` (``Consumer.committed``); raises
        KafkaException as it does, TimeoutError past ``within`` seconds."""
        if self._error is not None:
            raise self._error
        future: Future[Any] = Future()
        self._requests.put((partitions, future))
        result: list[TopicPartition] = future.result(within)
        return result

    def close(self) -> None:
        """Close the consumer once the current read is over (idempotent; never waits)."""
        self._requests.put(None)

    def _run(self) -> None:
        try:
            consumer = Consumer(self._config)
        except KafkaException as exc:
            self._error = exc
            self._fail_all(exc)
            return
        try:
            if self._warm is not None:
                with contextlib.suppress(KafkaException):
                    consumer.committed([self._warm], timeout=_WARM_TIMEOUT)
            while (request := self._requests.get()) is not None:
                partitions, future = request
                try:
                    future.set_result(consumer.committed(partitions, timeout=_COMMITTED_TIMEOUT))
                except KafkaException as exc:
                    future.set_exception(exc)
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()
        self._fail_all(KafkaException(KafkaError(KafkaError._DESTROY, "offset reader closed")))

    def _fail_all(self, exc: KafkaException) -> None:
        """Answer the requests still queued with ``exc`` (none comes after a close)."""
        with contextlib.suppress(queue.Empty):
            while True:
                if (request := self._requests.get_nowait()) is not None:
                    _resolve(request[1], exc.args[0])


class Owner(Protocol):
    """What a member needs from its subscription (all called on the event loop)."""

    def on_messages(self, member: Member, messages: list[Message]) -> None: ...
    def on_assigned(self, member: Member, partitions: list[tuple[str, int, int, str]]) -> None: ...
    async def on_revoked(self, member: Member, keys: list[tuple[str, int]]) -> list[Position]: ...
    def on_lost(self, member: Member, keys: list[tuple[str, int]]) -> None: ...
    def on_no_topic(self, member: Member) -> None: ...
    def on_fatal(self, member: Member, text: str) -> None: ...
    def busy(self) -> bool: ...


class Member:
    """One ``Consumer`` of ``group`` on ``topics`` and the thread that drives it."""

    def __init__(
        self,
        owner: Owner,
        loop: asyncio.AbstractEventLoop,
        *,
        group: str,
        topics: Sequence[str],
        config: dict[str, Any],
        eager: bool,
        revoke_timeout: float,
        scrub: Callable[[str], str],
        fallback_group: str | None = None,
    ) -> None:
        self.group = group
        self.fallback_group = fallback_group
        """A group whose committed offsets this one starts from where it has none (the
        action's group, for its retry group)."""
        self.topics = list(topics)
        self.eager = eager
        self._owner = owner
        self._loop = loop
        self._revoke_timeout = revoke_timeout
        self._scrub = scrub
        config = dict(config)
        config["error_cb"] = self.on_error
        config.setdefault("statistics.interval.ms", int(STATS_INTERVAL * 1000))
        self._their_stats: Callable[[str], object] | None = config.get("stats_cb")
        config["stats_cb"] = self._on_stats  # which calls the user's own too
        self._config = config
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._commands: queue.SimpleQueue[tuple[list[Position], Future[None]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.room = threading.Event()
        """Set while the owner's local buffer has room; the thread consumes only then."""
        self.room.set()
        self.done: asyncio.Future[None] = loop.create_future()
        self.assigned_once = asyncio.Event()
        # Thread-owned.
        self._owned: set[tuple[str, int]] = set()
        self._paused = False
        self._committed: dict[tuple[str, int], int] = {}
        self._lag_at = 0.0
        self._error_at = 0.0
        self._last_error_log: dict[int, float] = {}
        self._fetch_watch = FetchWatch()
        self._unsettled_since: float | None = None
        self._coordinator_down_since: float | None = None
        self._stats: str | None = None
        """librdkafka's last statistics (JSON), read only to describe partitions."""
        self._nothing: tuple[float, list[str]] | None = None
        """When none of its topics existed, and its names (:meth:`_look_for_topics`)."""
        self._look = False
        self._commit_future: Future[None] | None = None
        """The future of the commit the thread is in (resolved by close())."""
        self._reader: OffsetReader | None = None
        """The fallback group's offset reader made at start, for the first assignment."""
        # Written by the thread, read by the loop (plain attributes): what health says.
        self.lag: int | None = None
        self.last_error: str | None = None
        self.fatal: str | None = None
        self.stuck: str | None = None
        """Holds no partitions while the group has not settled for ``STUCK_AFTER`` s."""
        self.starving: str | None = None
        """Held partitions with records waiting fetch nothing (:mod:`.fetchwatch`)."""
        self.coordinator_down: str | None = None
        """The statistics show the group without its coordinator (``COORDINATOR_DOWN_AFTER``)."""
        self.heartbeat = time.monotonic()
        """When the thread last came back from a poll (or a wait for room)."""
        self.due = self.heartbeat + _CALLBACK_ALLOWANCE
        """By when the thread's current call should return (without the stall margin)."""
        self.died: str | None = None
        self.abandoned = False
        """Replaced after a stall or death: nothing more is done through its consumer."""
        self.lost_at: float | None = None
        """When the group's session was lost (partitions lost), until the next assignment."""
        self.commit_began: float | None = None
        self.commit_failing_since: float | None = None
        """Since when every commit failed for want of the coordinator."""
        self.commit_failure = ""
        self.replacing: str | None = None
        """Why the member this one replaced was given up, until this one is assigned."""
        self.in_a_row = 0
        """Members of its group replaced in a row for want of the coordinator, this one
        included (0 again once a member of the group is assigned)."""
        self.all_down = False
        """librdkafka reported every broker down (``_ALL_BROKERS_DOWN``) and no statistics
        or records have shown one up since."""
        self.answered_at = 0.0
        """When the brokers answered again after an outage (every broker down, a commit
        waiting ``COMMIT_SLOW`` or more, a coordinator loading the group)."""

    # -- lifecycle (loop side) -----------------------------------------------------------------

    def start(self) -> None:
        """Create the consumer and its thread; raises KafkaException on a bad config."""
        consumer = Consumer(self._config)
        self._consumer = consumer
        consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        if self.fallback_group:
            # Started now, it finds the fallback group's coordinator while this one joins.
            self._reader = OffsetReader(
                self._reader_config(), TopicPartition(self.topics[0], 0), self.group
            )
        self._thread = threading.Thread(
            target=self._run, name=f"hexa-kafka-consumer-{self.group}", daemon=True
        )
        self._thread.start()

    def commit(self, positions: list[Position]) -> asyncio.Future[None]:
        """Commit ``positions`` (asynchronously on the thread); the future says how it went."""
        future: Future[None] = Future()
        if self.done.done() or self.abandoned:
            future.set_result(None)  # gone: the revoke/close commit wrote what it could
        else:
            self._commands.put((positions, future))
        return asyncio.wrap_future(future, loop=self._loop)

    # -- health (loop side) --------------------------------------------------------------------

    def _retired(self) -> bool:
        """Replaced, stopping or failed for good: its problems are no longer reported."""
        return self.abandoned or self._stop.is_set() or self.fatal is not None

    def problem(self, margin: float) -> str | None:
        """Why this member's thread cannot go on (it died, or it has been in one call for
        ``margin`` seconds past that call's bound; ``margin`` 0: never stalled), else None."""
        thread = self._thread
        if self._retired() or thread is None:
            return None
        if self.died is not None:
            return f"died: {self.died}"
        if not thread.is_alive():
            return "died without an error"
        now = time.monotonic()
        if margin > 0 and now > self.due + margin:
            return f"has not polled for {now - self.heartbeat:.0f} s"
        return None

    def coordinator_problem(self, now: float | None = None) -> tuple[str, float] | None:
        """What keeps this member from its group coordinator, and since when: partitions
        lost with the group's session, a commit waiting past ``COMMIT_SLOW``, or commits
        refused for want of one; else None."""
        if self._retired():
            return None
        now = time.monotonic() if now is None else now
        lost, began, failing = self.lost_at, self.commit_began, self.commit_failing_since
        if lost is not None:
            return (
                f"lost its partitions {now - lost:.0f} s ago: the group's session timed out "
                "without an answer from its coordinator; rejoining",
                lost,
            )
        if began is not None and now - began >= COMMIT_SLOW:
            return (
                f"cannot commit: a commit has waited {now - began:.0f} s for the group coordinator",
                began,
            )
        if failing is not None:
            return f"cannot commit for {now - failing:.0f} s: {self.commit_failure}", failing
        return None

    def without_coordinator(
        self, since: float, witnesses: Sequence[Member] = (), now: float | None = None
    ) -> float:
        """Seconds this member has gone without its coordinator (from ``since``, of
        :meth:`coordinator_problem`) while the brokers answered: 0 while every broker is
        down (a member replaced then cannot leave its group), else counted from the later
        of ``since`` and the end of the last outage. While a commit waits its thread serves
        nothing: the ``witnesses`` (the subscription's other members) tell whether the
        brokers answer; without one, 0 (the stall rule still applies)."""
        if self.all_down:
            return 0.0
        answered = self.answered_at
        if self.commit_began is not None:
            others = [w for w in witnesses if w is not self and not w._retired()]
            if not others or any(w.all_down for w in others):
                return 0.0
            answered = max(answered, *(w.answered_at for w in others))
        now = time.monotonic() if now is None else now
        return now - max(since, answered)

    def fetch_problem(self) -> str | None:
        """A member in its group that fetches nothing (:mod:`.fetchwatch`), or whose
        statistics show no group coordinator; else None."""
        return None if self._retired() else self.starving or self.coordinator_down

    def stack(self) -> str:
        """The thread's current Python stack (where it is stuck), or why it is not known."""
        thread = self._thread
        ident = thread.ident if thread is not None and thread.is_alive() else None
        frame = None if ident is None else sys._current_frames().get(ident)
        if frame is None:  # ended (its ident may belong to another thread now)
            return "(the thread has ended)"
        return "".join(traceback.format_stack(frame))

    def close(self, within: float, final: list[Position] | None = None) -> asyncio.Future[bool]:
        """End the thread, then (on a daemon thread) commit ``final``, leave the group
        (serving the revoke) and close the consumer. ``final`` None: give the member up
        (replaced after a stall or death): its queued commits resolve unwritten, nothing
        more is done on its thread, which is waited for only until its call's bound. The
        future resolves when that is done or ``within`` seconds passed."""
        self.abandoned = final is None
        self._stop.set()
        self.room.set()
        wait = None  # a clean stop: after the thread's current call, however long
        if final is None:
            self._run_commands(None)
            current = self._commit_future
            if current is not None:  # the new member's commits must not wait for this
                _resolve(current, None)
            wait = min(max(0.0, self.due - time.monotonic()) + _POLL_IDLE, _CALLBACK_ALLOWANCE)
        consumer, thread = self._consumer, self._thread

        def close() -> None:
            try:
                if thread is not None:
                    # A thread that still polls returns within its call's bound (and sees
                    # it was abandoned): the consumer is then never used from two threads.
                    thread.join(wait)
                self._close_reader()  # closed before its first assignment
                if consumer is not None:
                    if final:
                        self._write(consumer, final, "at close")
                    self._leave(consumer)
                    consumer.close()
            except BaseException as exc:  # a broken consumer: nothing more to save
                log.warning(
                    "Kafka group %r: closing the consumer failed: %s",
                    self.group,
                    self._scrub(repr(exc)),
                )

        return in_daemon(self._loop, close, f"hexa-kafka-close-{self.group}", within)

    def _expect(self, seconds: float) -> None:
        """The thread enters a call that should return within ``seconds``."""
        self.due = time.monotonic() + seconds

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        owner, loop = self._owner, self._loop
        try:
            held_since: float | None = None
            while not self._stop.is_set() and self.fatal is None:
                self.heartbeat = time.monotonic()
                self._run_commands(consumer)
                if not self.room.is_set():  # the owner's buffer is full (backpressure)
                    if held_since is None:
                        self._fetch_watch.hold()
                        held_since = time.monotonic()
                    if time.monotonic() - held_since < _HOLD_BEFORE_PAUSE:
                        self._expect(_POLL_BUSY)
                        self.room.wait(_POLL_BUSY)
                        continue
                    self._pause(consumer, True)
                else:
                    held_since = None
                    self._pause(consumer, False)
                # Busy: a short wait gathers a batch; idle: the first record at once
                # (docs/engines/kafka.md, "Internals").
                if owner.busy():
                    self._expect(_POLL_BUSY)
                    messages = consumer.consume(_CONSUME_BATCH, _POLL_BUSY)
                else:
                    self._expect(_POLL_IDLE)
                    first = consumer.poll(_POLL_IDLE)
                    messages = [] if first is None else [first]
                    if first is not None:
                        messages.extend(consumer.consume(_CONSUME_BATCH - 1, 0))
                if self.abandoned:
                    return  # replaced while away: its consumer is another thread's now
                if messages:
                    # Records of partitions revoked meanwhile are dropped on the loop.
                    loop.call_soon_threadsafe(owner.on_messages, self, messages)
                self._measure_lag(consumer)
                if self._look:
                    self._look_for_topics(consumer)
        except BaseException as exc:
            if self.abandoned:
                return
            log.exception("Kafka group %r: the consumer thread failed", self.group)
            # The owner's watchdog replaces this member (its close() leaves the group).
            why = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            self.died = f"the consumer thread failed ({why})"
        finally:
            self._run_commands(None)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.done.set_result, None)

    def _pause(self, consumer: Consumer, paused: bool) -> None:
        """Pause (or resume) every assigned partition, once per change."""
        if self._paused != paused:
            self._paused = paused
            with contextlib.suppress(KafkaException):
                (consumer.pause if paused else consumer.resume)(consumer.assignment())

    def _run_commands(self, consumer: Consumer | None) -> None:
        """Write the commits queued so far (``None``: the thread ends, nothing more is
        written, the loop's futures resolve)."""
        while True:
            try:
                positions, future = self._commands.get_nowait()
            except queue.Empty:
                return
            failed = None
            try:
                if consumer is not None:
                    self._expect(_COMMIT_ALLOWANCE)
                    self._commit_future = future
                    failed = self._write(consumer, positions)
            finally:  # a write that raised ends the thread: its commit resolves unwritten
                self._commit_future = None
                _resolve(future, failed)

    def _write(
        self, consumer: Consumer, positions: Sequence[Position], when: str = ""
    ) -> KafkaError | None:
        """Commit the ``positions`` of held partitions synchronously (an asynchronous
        commit's result comes only from a later poll, which a full buffer holds back),
        noting how long it waits and whether the coordinator answers; the first error, one
        that is not a rebalance's first (logged, ``when`` given), else None."""
        owned = self._owned
        tps = [
            TopicPartition(t, p, o, metadata=m)
            for t, p, o, m in positions
            if (t, p) in owned and o >= 0
        ]
        if not tps:
            return None
        began = self.commit_began = time.monotonic()
        try:
            result: list[TopicPartition] = consumer.commit(offsets=tps, asynchronous=False) or []
            errors = [tp.error for tp in result if tp.error is not None]
        except KafkaException as exc:
            result, errors = [], [exc.args[0]]
        finally:
            if time.monotonic() - began >= COMMIT_SLOW:
                # Its thread served nothing meanwhile (errors, statistics): the brokers
                # answer again now, whatever librdkafka reported while it waited.
                self.answered_at = time.monotonic()
            self.commit_began = None
        self._note_commit(errors[0] if errors and len(errors) >= len(result) else None)
        errors.sort(key=lambda e: e.code() in _REBALANCE_CODES)  # a moving partition's last
        failed = errors[0] if errors else None
        for tp in result:
            if tp.error is None:
                self._committed[(tp.topic, tp.partition)] = tp.offset
        if failed is not None and when:
            log.warning(
                "Kafka group %r: commit %s failed: %s; those records will be delivered again",
                self.group,
                when,
                self._scrub(failed.str()),
            )
        return failed

    def _note_commit(self, err: KafkaError | None) -> None:
        """Track commits failing for want of the group coordinator (cleared by one that
        got through, or failed for another reason)."""
        if err is None or err.code() not in _COORDINATOR_CODES:
            self.commit_failing_since = None
            return
        self.commit_failure = f"{err.name()}: {self._scrub(err.str())}"
        if err.code() == KafkaError.COORDINATOR_LOAD_IN_PROGRESS:
            # A restarted coordinator loading the group answers: the group is coming back
            # (a member replaced now would send its LeaveGroup into the load, in vain).
            self.answered_at = time.monotonic()
        if self.commit_failing_since is None:
            self.commit_failing_since = time.monotonic()
            log.warning(
                "Kafka group %r: commit failed: %s (the group coordinator does not answer)",
                self.group,
                self.commit_failure,
            )

    def _on_stats(self, stats: str) -> None:
        """librdkafka's statistics (on the consumer thread): the group's state, for the
        stuck, coordinator and recovery rules (docs/engines/kafka.md, "Internals")."""
        self._stats = stats
        if self._their_stats is not None:
            self._their_stats(stats)
        if self.all_down and '"state":"UP"' in stats:  # a broker answers again
            self._answered()
        if not (cgrp := _group_stats(stats)):
            return
        now = time.monotonic()
        state, join_state = cgrp.get("state"), cgrp.get("join_state")
        recovered = state == "up" and now - self._error_at >= _RECOVERY_AFTER
        if recovered and self.last_error is not None and self.fatal is None:
            # Passive on purpose (docs/engines/kafka.md, "Internals").
            log.info(
                "Kafka group %r: connected to its coordinator again (was: %s)",
                self.group,
                self.last_error,
            )
            self.clear_error()
        self._note_coordinator(cgrp, now)
        lost = self.lost_at
        if lost is not None and join_state == "steady":
            # Rejoined without an assign callback: the last rebalance came after the loss.
            age = float(cgrp.get("rebalance_age", 0)) / 1000
            if now - age > lost + _RECOVERY_AFTER:
                self.lost_at = None
        settled = join_state == "steady" or int(cgrp.get("assignment_size", 0)) > 0
        idle = not settled and not self._owned
        self._nothing = self._nothing if idle else None
        self._look = idle and state == "up"  # after this poll (not in a callback: aborts)
        missing = self._nothing[1] if self._nothing and not self._stop.is_set() else None
        if missing is not None:  # librdkafka joins once a topic exists: nothing is stuck
            idle, self.lost_at = False, None  # nor is its session lost: no topic to hold
            self._loop.call_soon_threadsafe(self._owner.on_no_topic, self)
        self._unsettled_since, age = _lasting(self._unsettled_since, idle, now)
        self.stuck = None
        if missing:
            self.stuck = (
                f"consumes topic(s) {', '.join(missing)} that no longer exist (deleted?): "
                "create them again (a publish does with KafkaOptions(provision=True))"
            )
        elif age >= STUCK_AFTER:
            self.stuck = (
                f"holds no partitions: group {self.group!r} has been rebalancing for "
                f"{age:.0f} s (state {state}/{join_state}, "
                f"{cgrp.get('rebalance_cnt', '?')} rebalances; last: "
                f"{cgrp.get('rebalance_reason') or '?'}). A member that cannot join keeps "
                "it from settling, e.g. Go hexa-event (sarama 1.27) leading a group shared "
                "with Python members: see docs/go-interop.md"
            )

    def _look_for_topics(self, consumer: Consumer) -> None:
        """Whether none of the member's topics exists (neither a name nor a topic matching
        its pattern): then ``_nothing`` holds its names (deleted since), for the next
        statistics; a finding kept ``_NOTHING_KEPT`` s (a lookup lists every topic)."""
        self._look, now, nothing = False, time.monotonic(), self._nothing
        if nothing is not None and now - nothing[0] < _NOTHING_KEPT:
            return
        self._expect(_COMMITTED_TIMEOUT + _CALLBACK_ALLOWANCE)
        try:
            found = consumer.list_topics(timeout=_COMMITTED_TIMEOUT).topics
        except KafkaException:
            return
        names = [t for t in self.topics if not t.startswith("^")]
        patterns = [re.compile(t) for t in self.topics if t.startswith("^")]
        exists = any(n in found for n in names) or any(p.match(t) for p in patterns for t in found)
        self._nothing = None if exists else (now, names)

    def _note_coordinator(self, cgrp: dict[str, Any], now: float) -> None:
        """Track the group's state (``up``: its coordinator answers) for health."""
        state = cgrp.get("state")
        down = state != "up" and not self._stop.is_set()
        self._coordinator_down_since, age = _lasting(self._coordinator_down_since, down, now)
        self.coordinator_down = None
        if age >= COORDINATOR_DOWN_AFTER:
            self.coordinator_down = (
                f"has no group coordinator: librdkafka's group state has been {state!r} "
                f"(not 'up') for {age:.0f} s"
            )

    def _measure_lag(self, consumer: Consumer, now: float | None = None) -> None:
        """Every second: records of the held partitions not yet committed (cached ends), and
        whether partitions with records waiting fetch nothing (:mod:`.fetchwatch`)."""
        now = time.monotonic() if now is None else now
        if now - self._lag_at < _LAG_INTERVAL:
            return
        self._lag_at = now
        owned = list(self._owned)
        try:
            positions = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.position([TopicPartition(t, p) for t, p in owned])
            }
        except KafkaException:
            positions = {}
        total, known = 0, False
        views: dict[tuple[str, int], tuple[int, int]] = {}
        for key in owned:
            committed = self._committed.get(key, -1)
            position = positions.get(key, -1)
            # Before its first record the position is where the assignment started.
            position = position if position >= 0 else committed
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            except KafkaException:
                low, high = -1, -1
            views[key] = (position, high)
            if high >= 0:
                total += max(0, high - (committed if committed >= 0 else max(low, 0)))
                known = True
        # A member that holds nothing (after its assignment) is behind by nothing.
        self.lag = total if known or (self.assigned_once.is_set() and not self._owned) else None
        if not self.room.is_set() or self._paused or self.all_down:
            self._fetch_watch.hold()  # holding back on purpose, or an outage: not a stall
            starved = []
        else:
            starved = self._fetch_watch.observe(now, views)
        if not starved:
            self.starving = None
            return
        text = describe_starved(starved, now, self._fetch_states())
        if self.starving is None:
            log.warning("Kafka group %r %s", self.group, text)
        self.starving = text

    def _fetch_states(self) -> dict[tuple[str, int], str]:
        """Each partition's fetch state in librdkafka's last statistics (``{}``: none)."""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            topics = json.loads(self._stats or "{}").get("topics", {})
            return {
                (name, int(number)): str(p.get("fetch_state", "?"))
                for name, topic in topics.items()
                for number, p in topic.get("partitions", {}).items()
                if int(number) >= 0
            }
        return {}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Committed offsets of this group, maybe of the fallback group: two lookups (the
        # second maybe after the reader's first, :class:`OffsetReader`).
        self._expect(2 * _COMMITTED_TIMEOUT + _WARM_TIMEOUT + _CALLBACK_ALLOWANCE)
        found: list[tuple[str, int, int, str]] = []
        if partitions:
            known = True
            try:
                committed = consumer.committed(partitions, timeout=_COMMITTED_TIMEOUT)
            except KafkaException as exc:
                log.warning(
                    "Kafka group %r: cannot read committed offsets (%s); records acked above "
                    "them by the previous owner may come again",
                    self.group,
                    self._scrub(exc.args[0].str()),
                )
                committed = [TopicPartition(tp.topic, tp.partition, -1) for tp in partitions]
                known = False
            if self.fallback_group and any(tp.offset < 0 for tp in committed):
                committed = self._fallback(committed)
            for tp in committed:
                offset = tp.offset if tp.offset >= 0 else -1
                found.append((tp.topic, tp.partition, offset, tp.metadata or ""))
                self._committed[(tp.topic, tp.partition)] = offset
            if known:  # start where we just read (else librdkafka looks them up itself)
                earliest = self._config.get("auto.offset.reset") == "earliest"
                start = OFFSET_BEGINNING if earliest else OFFSET_END
                partitions = [TopicPartition(t, p, o if o >= 0 else start) for t, p, o, _ in found]
        (consumer.assign if self.eager else consumer.incremental_assign)(partitions)
        if self._paused and partitions:
            consumer.pause(partitions)
        self._owned.update((tp.topic, tp.partition) for tp in partitions)
        self._close_reader()  # this group had offsets of its own: not needed
        self.lost_at = None  # back in the group
        self._lag_at = 0.0  # measure at the next turn, not up to a second later
        self._loop.call_soon_threadsafe(self._owner.on_assigned, self, found)

    def _reader_config(self) -> dict[str, Any]:
        """Settings of a consumer of the fallback group that reads offsets only (never
        subscribes, so joins nothing; no callbacks of this member's)."""
        drop = ("error_cb", "on_commit", "stats_cb", "statistics.interval.ms")
        config = {k: v for k, v in self._config.items() if k not in drop}
        config["group.id"] = self.fallback_group
        return config

    def _fallback(self, committed: list[TopicPartition]) -> list[TopicPartition]:
        """``committed`` with the fallback group's offsets where this group has none."""
        missing = [TopicPartition(tp.topic, tp.partition) for tp in committed if tp.offset < 0]
        # The reader made at start (its first read may still be under way, at most
        # _WARM_TIMEOUT), or one made for this read (a later assignment).
        reader = self._reader or OffsetReader(self._reader_config(), None, self.group)
        self._reader = None
        try:
            found = reader.committed(missing, _WARM_TIMEOUT + _COMMITTED_TIMEOUT)
        except (KafkaException, TimeoutError) as exc:
            why = exc.args[0].str() if isinstance(exc, KafkaException) else "timed out"
            log.warning(
                "Kafka group %r: cannot read the offsets of %r (%s); starting from %s",
                self.group,
                self.fallback_group,
                self._scrub(why),
                self._config.get("auto.offset.reset"),
            )
            return committed
        finally:
            reader.close()
        by_key = {(tp.topic, tp.partition): tp for tp in found if tp.offset >= 0}
        return [by_key.get((tp.topic, tp.partition), tp) for tp in committed]

    def _close_reader(self) -> None:
        """Close the reader made at start if nothing used it."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _leave(self, consumer: Consumer) -> None:
        """Unsubscribe and serve the revoke before ``close()``: closing with partitions
        assigned during a rebalance can hang librdkafka (its issues #4527 and #4884).
        Records polled meanwhile are dropped (never handed out, never committed)."""
        deadline = time.monotonic() + self._revoke_timeout + 5
        try:
            consumer.unsubscribe()
            while consumer.assignment() and time.monotonic() < deadline:
                consumer.poll(0.05)
        except KafkaException as exc:
            log.debug("Kafka group %r: leaving before close: %s", self.group, exc)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._expect(self._revoke_timeout + _CALLBACK_ALLOWANCE + _COMMIT_ALLOWANCE)
        keys = [(tp.topic, tp.partition) for tp in partitions]
        positions: list[Position] = []
        try:
            future = asyncio.run_coroutine_threadsafe(
                self._owner.on_revoked(self, keys), self._loop
            )
            positions = future.result(timeout=self._revoke_timeout + 5)
        except Exception:
            log.exception("Kafka group %r: revoke handling failed", self.group)
        self._write(consumer, positions, "of revoked partitions")
        self._unassign(consumer, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if keys:
            self.lost_at = self.lost_at or time.monotonic()
        log.warning(
            "Kafka group %r lost partitions %s (session timeout?); their unfinished events "
            "will be delivered again",
            self.group,
            keys,
        )
        self._loop.call_soon_threadsafe(self._owner.on_lost, self, keys)
        self._unassign(consumer, partitions)

    def _unassign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Give up ``partitions`` (revoked or lost): neither held nor their commits known."""
        for tp in partitions:
            self._owned.discard((tp.topic, tp.partition))
            self._committed.pop((tp.topic, tp.partition), None)
        if self.eager:
            consumer.unassign()
        else:
            consumer.incremental_unassign(partitions)

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback (and errors in consumed messages): a fatal one is
        reported to the owner once, with advice; others are shown until records flow."""
        text = f"{err.name()}: {self._scrub(err.str())}"
        advice = _FATAL_CODES.get(err.code())
        if advice is None and err.fatal():
            advice = "librdkafka reported a fatal error; restart the receiver after fixing it"
        if advice is None:
            self.last_error = text
            now = self._error_at = time.monotonic()
            if err.code() == KafkaError._ALL_BROKERS_DOWN:
                self.all_down = True
            if now - self._last_error_log.get(err.code(), 0.0) >= _ERROR_LOG_INTERVAL:
                self._last_error_log[err.code()] = now
                log.warning(
                    "Kafka group %r: %s (librdkafka retries with backoff)", self.group, text
                )
        elif self.fatal is None:
            self.fatal = self.last_error = f"{text}; {advice}"
            log.error("Kafka group %r cannot go on: %s", self.group, self.fatal)
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._owner.on_fatal, self, self.fatal)

    def clear_error(self) -> None:
        """Records flow again: a transient error is over (fatal ones stay)."""
        if self.fatal is None:
            self.last_error = None
        if self.all_down:
            self._answered()

    def _answered(self) -> None:
        """The brokers answer again after every one was down."""
        self.all_down = False
        self.answered_at = time.monotonic()
