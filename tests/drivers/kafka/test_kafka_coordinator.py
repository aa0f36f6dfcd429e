"""Issue 23: a Kafka member without its group coordinator (no broker needed).

What health says about a member whose partitions were lost with the group's session, or
whose commits wait for or are refused by the coordinator; when the subscription replaces
it (``KafkaOptions.coordinator_timeout``, backed off, not counted towards the watchdog's
limit); and that what was settled and not committed is kept for the partition's next
assignment in this process. The same paths against a real lost coordinator:
tests/services/test_kafka_coordinator_faults.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from member_helpers import new_member

from hexa_event.driver import Outcome, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaOptions, consumer, member
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.errors import ConfigurationError
from hexa_event.testing.waiting import eventually


def test_coordinator_timeout_is_checked_and_parsed_from_the_url() -> None:
    assert KafkaOptions().coordinator_timeout == 60.0
    assert KafkaOptions.from_url("kafka://h:9092?coordinator_timeout=5").coordinator_timeout == 5
    assert KafkaOptions(coordinator_timeout=0).coordinator_timeout == 0
    with pytest.raises(ConfigurationError, match="coordinator_timeout"):
        KafkaOptions(coordinator_timeout=-1)


def _received(state: PartitionState, offsets: range) -> None:
    for offset in offsets:
        state.offsets.append(offset)
        state.next_offset = offset + 1


def test_a_new_assignment_inherits_what_the_earlier_state_settled() -> None:
    earlier = PartitionState(("t", 0), None, 10)
    _received(earlier, range(10, 20))
    for offset in (10, 11, 12, 13, 14, 17):
        earlier.complete(offset)
    assert earlier.watermark() == 15

    # The broker's committed offset is behind (the commits did not get through).
    state = PartitionState(("t", 0), None, 12)
    assert state.inherit(earlier)
    assert state.next_offset == 15
    assert state.skip == {17}
    assert state.position() == (15, "hexa1:2+1")

    # Already committed past the earlier watermark (another member went on): kept as is,
    # only what was acked above it is skipped.
    state = PartitionState(("t", 0), None, 16)
    assert state.inherit(earlier)
    assert (state.next_offset, state.skip) == (16, {17})

    # Nothing committed yet at all.
    state = PartitionState(("t", 0), None, -1)
    assert state.inherit(earlier)
    assert state.next_offset == 15

    # Nothing settled that the commit does not cover: nothing to commit.
    state = PartitionState(("t", 0), None, 20)
    assert not state.inherit(earlier)


async def test_a_member_reports_lost_partitions_and_commits_without_a_coordinator() -> None:
    m = new_member(asyncio.get_running_loop())
    assert m.coordinator_problem(now=100.0) is None

    m.lost_at = 90.0
    text, since = m.coordinator_problem(now=100.0) or ("", 0.0)
    assert since == 90.0
    assert "lost its partitions 10 s ago" in text
    m.lost_at = None

    m.commit_began = 99.0  # a commit in progress, not slow yet
    assert m.coordinator_problem(now=100.0) is None
    m.commit_began = 90.0
    assert (
        "a commit has waited 10 s for the group coordinator"
        in (m.coordinator_problem(now=100.0) or ("", 0.0))[0]
    )
    m.commit_began = None

    m._note_commit(KafkaError(KafkaError.NOT_COORDINATOR))
    failing = m.commit_failing_since
    assert failing is not None
    m._note_commit(KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE))
    assert m.commit_failing_since == failing  # since the first failure
    text, since = m.coordinator_problem(now=failing + 7) or ("", 0.0)
    assert since == failing
    assert text.startswith("cannot commit for 7 s: COORDINATOR_NOT_AVAILABLE")
    m._note_commit(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))  # not the coordinator
    assert m.coordinator_problem() is None
    m._note_commit(KafkaError(KafkaError.NOT_COORDINATOR))
    m._note_commit(None)  # one got through
    assert m.coordinator_problem() is None

    m.lost_at = 1.0
    m.abandoned = True  # replaced: its successor reports
    assert m.coordinator_problem() is None


class _Committed:
    def __init__(self, tp: TopicPartition, error: KafkaError | None) -> None:
        self.topic, self.partition, self.offset, self.error = (
            tp.topic,
            tp.partition,
            tp.offset,
            error,
        )


class _Consumer:
    """What a member's ``_write`` calls: refuses with ``error`` (or raises it)."""

    def __init__(self, error: KafkaError | None, raises: bool = False) -> None:
        self.error, self.raises = error, raises

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        assert asynchronous is False
        if self.raises:
            raise KafkaException(self.error)
        return [_Committed(tp, self.error) for tp in offsets]


async def test_commits_refused_for_want_of_a_coordinator_are_tracked() -> None:
    m = new_member(asyncio.get_running_loop())
    m._owned = {("t", 0)}
    positions = [("t", 0, 5, "")]
    not_coordinator = KafkaError(KafkaError.NOT_COORDINATOR)
    c: Any = _Consumer(not_coordinator)
    assert m._write(c, positions) == not_coordinator
    assert m.commit_failing_since is not None
    assert m.commit_began is None
    c = _Consumer(None)
    assert m._write(c, positions) is None
    assert m.commit_failing_since is None
    assert m._committed == {("t", 0): 5}
    c = _Consumer(KafkaError(KafkaError._WAIT_COORD), raises=True)
    assert m._write(c, positions) == KafkaError(KafkaError._WAIT_COORD)
    assert m.commit_failing_since is not None
    assert m.commit_began is None
    moving = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    c = _Consumer(moving, raises=True)
    assert m._write(c, positions) == moving  # not written: sent again, no error for the user
    assert m.commit_failing_since is None


class _FakeMember:
    """The loop-side face of a member, for the subscription's bookkeeping."""

    def __init__(self, group: str = "g") -> None:
        self.group = group
        self.topics = ["t"]
        self.abandoned = False
        self.replacing: str | None = None
        self.in_a_row = 0
        self.last_error: str | None = None
        self.stuck: str | None = None
        self.assigned_once = asyncio.Event()
        self.room = threading.Event()
        self.commits: list[list[Any]] = []
        self.pending: list[asyncio.Future[None]] = []

    def commit(self, positions: list[Any]) -> asyncio.Future[None]:
        self.commits.append(positions)
        self.pending.append(asyncio.get_running_loop().create_future())
        return self.pending[-1]  # answered when the test says

    def coordinator_problem(self) -> None:
        return None

    def fetch_problem(self) -> None:
        return None

    def clear_error(self) -> None:
        pass

    def problem(self, margin: float) -> None:
        return None


class _Message:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._tp = (topic, partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._tp[0]

    def partition(self) -> int:
        return self._tp[1]

    def offset(self) -> int:
        return self._tp[2]

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"{}"

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (0, 0)


async def _receive(sub: KafkaSubscription, m: Any, offsets: range) -> list[int]:
    sub.on_messages(m, [_Message("t", 0, o) for o in offsets])
    out = []
    while sub._buffered:
        out.extend(await sub.fetch(100))
    return [d.coordinates for d in out]


@pytest.mark.parametrize("how", ["lost", "replaced"])
async def test_settled_offsets_survive_a_lost_or_replaced_member(how: str) -> None:
    sub = KafkaSubscription(KafkaOptions(), SubscriptionSpec(group="g", channels=("t",)), None)
    sub._loop = asyncio.get_running_loop()
    first, second = _FakeMember(), _FakeMember()
    sub.on_assigned(first, [("t", 0, 10, "")])
    sub.on_messages(first, [_Message("t", 0, o) for o in range(10, 20)])
    deliveries = await sub.fetch(100)
    assert len(deliveries) == 10
    for delivery in deliveries:  # 10-14 and 17 handled; the rest still running
        if delivery.coordinates in {f"t-0-{o}" for o in (10, 11, 12, 13, 14, 17)}:
            delivery.outcome = Outcome.ACK
    await sub.settle(deliveries)
    await eventually(lambda: bool(first.commits), within=5, what="the commit (never answered)")
    if how == "lost":
        # The commit failed (the coordinator did not answer), then the session was lost.
        first.pending[0].set_exception(KafkaException(KafkaError(KafkaError._WAIT_COORD)))
        sub.on_lost(first, [("t", 0)])
    else:
        # Replaced while its commit hangs: close() resolves that commit unwritten, and
        # the new member is assigned the partition before the old one's revoke.
        first.abandoned = True
        first.pending[0].set_result(None)
    # The broker still has offset 10 committed: without the earlier state, 10-19 came again.
    sub.on_assigned(second, [("t", 0, 10, "")])
    again = await _receive(sub, second, range(10, 20))
    assert again == ["t-0-15", "t-0-16", "t-0-18", "t-0-19"]
    await eventually(lambda: bool(second.commits), within=5, what="the inherited commit")
    assert second.commits[0] == [("t", 0, 15, "hexa1:2+1")]  # what was settled, committed


async def test_giving_a_member_up_resolves_the_commit_its_thread_is_in() -> None:
    """Else the subscription's next commits, by the new member, wait for a thread that may
    never come back (one commit in flight at a time)."""
    m = new_member(asyncio.get_running_loop())
    future: concurrent.futures.Future[None] = concurrent.futures.Future()
    m._commit_future = future
    done = m.close(within=5)
    assert future.done()
    assert future.result() is None
    await asyncio.wait_for(done, 5)


async def test_coordinator_replacements_back_off_and_do_not_make_the_subscription_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = KafkaSubscription(
        KafkaOptions(coordinator_timeout=10), SubscriptionSpec(group="g", channels=("t",)), None
    )
    sub._loop = asyncio.get_running_loop()
    started: list[Any] = []

    class _Old(_FakeMember):
        def stack(self) -> str:
            return ""

        def close(self, within: float, final: Any = None) -> asyncio.Future[None]:
            self.abandoned = True
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    def new_member(group: str, topics: list[str]) -> Any:
        started.append(_Old(group))
        return started[-1]

    monkeypatch.setattr(sub, "_new_member", new_member)
    first = _Old()
    assert sub._coordinator_bound(first) == 10
    sub._members = [first]
    for n in range(consumer._MAX_REPLACEMENTS + 2):
        sub._replace(sub._members[0], "lost its partitions", counted=False)
        assert sub._fatal is None
        assert sub._members == [started[-1]]
        assert sub._coordinator_bound(started[-1]) == min(10 * 2 ** (n + 1), 600)
    assert "lost its partitions; replacing it" in (sub.last_error or "")
    sub.on_assigned(started[-1], [])  # a member of the group is assigned again
    assert sub._coordinator_bound(started[-1]) == 10
    assert started[-1].replacing is None  # it joined: health no longer says "replacing"
    assert sub.last_error is None
    assert (
        KafkaSubscription(
            KafkaOptions(coordinator_timeout=0), SubscriptionSpec(group="g", channels=("t",)), None
        )._coordinator_bound(first)
        == 0
    )
    assert KafkaOptions().coordinator_timeout > member.COMMIT_SLOW


async def test_events_nacked_together_come_again_in_their_order() -> None:
    """Deliveries nacked in one settle with one delay are handed out again in the order
    they were received, ahead of the records waiting (each was given back on its own, so
    the last nacked came first)."""
    sub = KafkaSubscription(KafkaOptions(), SubscriptionSpec(group="g", channels=("t",)), None)
    sub._loop = asyncio.get_running_loop()
    m = _FakeMember()
    sub.on_assigned(m, [("t", 0, 10, "")])
    sub.on_messages(m, [_Message("t", 0, o) for o in range(10, 15)])
    deliveries = await sub.fetch(3)
    for delivery in deliveries:
        delivery.outcome = Outcome.NACK
    await sub.settle(deliveries)
    await eventually(lambda: sub._buffered == 5, within=5, what="the nacked records back")
    again = await sub.fetch(100)
    assert [d.coordinates for d in again] == [f"t-0-{o}" for o in range(10, 15)]
    assert [d.delivery_count for d in again] == [2, 2, 2, 1, 1]


class _BrokenConsumer:
    """A consumer whose commit raises what a closed one does (not a KafkaException)."""

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        raise RuntimeError("Consumer closed")


async def test_a_commit_whose_write_raised_is_resolved_when_its_thread_ends() -> None:
    """The thread dies in the write: the commit it was in must still resolve (else the
    subscription, one commit in flight at a time, never commits again, not even through
    the member that replaces this one)."""
    m = new_member(asyncio.get_running_loop())
    m._owned = {("t", 0)}
    answer = m.commit([("t", 0, 5, "")])
    with pytest.raises(RuntimeError):
        m._run_commands(_BrokenConsumer())  # type: ignore[arg-type]
    m._run_commands(None)  # the thread's end (its finally)
    await asyncio.wait_for(m.close(within=5), 5)  # given up by the watchdog
    await asyncio.wait_for(answer, 5)  # unwritten: the replacement commits it again


async def test_a_late_revoke_keeps_the_partition_assigned_again_to_the_same_member() -> None:
    """The thread stopped waiting for the revoke (its loop busy past revoke_timeout + 5 s),
    and the group gave the member the partition again: the revoke, finishing late, must
    not drop that new assignment (its records were dropped until the next rebalance)."""
    sub = KafkaSubscription(KafkaOptions(), SubscriptionSpec(group="g", channels=("t",)), None)
    sub._loop = asyncio.get_running_loop()
    m: Any = _FakeMember()
    sub.on_assigned(m, [("t", 0, 10, "")])
    sub.on_messages(m, [_Message("t", 0, 10)])
    [delivery] = await sub.fetch(1)
    revoke = asyncio.ensure_future(sub.on_revoked(m, [("t", 0)]))
    await eventually(lambda: sub._partitions[("t", 0)].revoking, within=5, what="the revoke")
    sub.on_assigned(m, [("t", 0, 10, "")])  # assigned again while the revoke still waits
    delivery.outcome = Outcome.ACK
    await sub.settle([delivery])
    assert await asyncio.wait_for(revoke, 5) == []  # nothing of the old state to commit
    assert sub.status().assignment == ("t-0",)
    again = await _receive(sub, m, range(10, 12))
    # Delivered (10 again: it was acked on the old state after the new one took over).
    assert again == ["t-0-10", "t-0-11"]
