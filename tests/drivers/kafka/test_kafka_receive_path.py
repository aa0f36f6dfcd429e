"""The Kafka driver's receive path on the event loop, fed confluent-kafka messages built in
process (no broker): ``on_messages`` taking runs of a partition's records, record batches
over several partitions, settlement as runs, and the commits that follow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from kafka_stub_member import StubMember

from hexa_event.driver import PairHeaders, SubscriptionSpec
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.options import KafkaOptions
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _message(
    topic: str, partition: int, offset: int, headers: list[tuple[str, bytes | None]] | None = None
) -> Message:
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=f"k{offset}".encode(),
        value=f"{topic}-{partition}-{offset}".encode(),
        headers=headers if headers is not None else [("n", str(offset).encode())],
    )


def _subscription(
    member: StubMember, held: dict[tuple[str, int], int], prefetch: int = 100
) -> KafkaSubscription:
    """A subscription (not started) holding ``held`` partitions: key -> committed offset."""
    spec = SubscriptionSpec(group="g", channels=("a", "b"), prefetch=prefetch)
    sub = KafkaSubscription(KafkaOptions(bootstrap_servers="127.0.0.1:1"), spec, None)
    sub._loop = asyncio.get_running_loop()
    sub._members = [member]  # type: ignore[list-item]
    for key, committed in held.items():
        sub._partitions[key] = PartitionState(key, member, committed)
    return sub


async def test_runs_of_partitions_interleaved_revoked_repeated_and_errors() -> None:
    member = StubMember()
    sub = _subscription(member, {("a", 0): 0, ("a", 1): 0, ("b", 0): 0, ("b", 1): 0})
    sub._partitions[("b", 1)].revoking = True
    sub._partitions[("a", 1)].skip = {3}  # acked by a previous owner above its commit
    error = Message(error=KafkaError(KafkaError._TRANSPORT))
    messages = [
        _message("a", 0, 0),
        _message("a", 0, 1),
        _message("b", 0, 0),  # same number, another topic
        error,
        _message("a", 1, 2),
        _message("a", 1, 3),  # skipped: finished already
        _message("b", 1, 0),  # revoking: dropped
        _message("a", 0, 2),  # partition a-0 again
        _message("a", 0, 1),  # received already in this assignment
        _message("x", 0, 0),  # not held
    ]
    sub.on_messages(member, messages)  # type: ignore[arg-type]
    assert member.errors == [error.error()]
    out = await sub.fetch(100)
    assert [d.record.body for d in out] == [
        b"a-0-0",
        b"a-0-1",
        b"b-0-0",
        b"a-1-2",
        b"a-0-2",
    ]
    assert [d.coordinates for d in out] == ["a-0-0", "a-0-1", "b-0-0", "a-1-2", "a-0-2"]
    states = sub._partitions
    assert states[("a", 0)].next_offset == 3
    assert states[("a", 1)].next_offset == 4
    assert states[("b", 0)].next_offset == 1
    assert states[("b", 1)].next_offset == 0
    assert list(states[("a", 1)].offsets) == [2, 3]
    assert states[("a", 1)].done == {3}
    assert [s.outstanding for s in states.values()] == [3, 1, 1, 0]
    # A later call picks up where the run ended.
    sub.on_messages(member, [_message("a", 0, 2), _message("a", 0, 3)])  # type: ignore[list-item]
    (late,) = await sub.fetch(100)
    assert late.record.body == b"a-0-3"


async def test_record_batch_over_partition_runs_settles_and_commits_as_runs() -> None:
    member = StubMember()
    sub = _subscription(member, {("a", 0): 10, ("b", 0): 20})
    null = [("x", b"1"), ("empty", None), ("dup", b"1"), ("dup", b"2"), ("blank", b"")]
    messages = [
        _message("a", 0, 10, null),
        _message("a", 0, 11),
        _message("b", 0, 20),
        _message("b", 0, 21, []),
        _message("a", 0, 12),
    ]
    sub.on_messages(member, messages)  # type: ignore[arg-type]
    batch = await sub.fetch_records(100)
    assert batch is not None
    assert len(batch) == 5
    assert batch.channels == ["a", "a", "b", "b", "a"]
    assert batch.keys == ["k10", "k11", "k20", "k21", "k12"]
    assert batch.bodies == [b"a-0-10", b"a-0-11", b"b-0-20", b"b-0-21", b"a-0-12"]
    assert batch.natives == messages
    assert batch.headers[0] == null  # the client's pairs as they come (the core reads them)
    assert PairHeaders(batch.headers[0]) == {"x": b"1", "empty": b"", "dup": b"2", "blank": b""}
    assert PairHeaders(batch.headers[1]) == {"n": b"11"}
    assert list(batch.headers[3]) == []
    assert messages[0].headers() == null  # the user's native message is untouched
    assert sub._partitions[("a", 0)].outstanding == 3
    assert sub._partitions[("b", 0)].outstanding == 2

    taken = batch.take(1)  # a-0-11 handled on its own, unsettled
    assert taken.record.headers == {"n": b"11"}
    assert taken.coordinates == "a-0-11"
    batch.ack()
    await sub.settle_records([batch])
    assert sub._unsettled == 1
    # b-0 moves past both; a-0 stops at the taken record, 12 acked above it.
    await eventually(lambda: bool(member.commits), within=5)
    assert sorted(member.commits[0]) == [("a", 0, 11, "hexa1:1+1"), ("b", 0, 22, "")]
    taken.ack()
    await sub.settle([taken])
    await eventually(lambda: len(member.commits) == 2, within=5)
    assert member.commits[1] == [("a", 0, 13, "")]
    assert sub._unsettled == 0


async def test_a_nacked_record_batch_comes_back_in_order_counted_again() -> None:
    member = StubMember()
    sub = _subscription(member, {("a", 0): 0, ("b", 0): 0})
    messages = [_message("a", 0, 0), _message("b", 0, 0), _message("a", 0, 1)]
    sub.on_messages(member, messages)  # type: ignore[arg-type]
    first = await sub.fetch_records(100)
    assert first is not None
    taken = first.take(0)
    first.nack()
    await sub.settle_records([first])
    again = await sub.fetch_records(100)
    assert again is not None
    assert again.bodies == [b"b-0-0", b"a-0-1"]
    assert [again._delivery(i).delivery_count for i in range(2)] == [2, 2]
    again.ack()
    taken.ack()
    await sub.settle_records([again])
    await sub.settle([taken])
    assert [s.outstanding for s in sub._partitions.values()] == [0, 0]
    assert all(not s.offsets for s in sub._partitions.values())


async def test_single_deliveries_acked_across_partitions_commit_every_run() -> None:
    member = StubMember()
    sub = _subscription(member, {("a", 0): 0, ("b", 0): 0})
    messages = [_message("a", 0, 0), _message("b", 0, 0), _message("a", 0, 1)]
    sub.on_messages(member, messages)  # type: ignore[arg-type]
    out = list(await sub.fetch(100))
    for d in out:
        d.ack()
    await sub.settle([*out, *out])  # settling twice applies once
    assert sub._unsettled == 0
    await eventually(lambda: bool(member.commits), within=5)
    assert sorted(member.commits[0]) == [("a", 0, 2, ""), ("b", 0, 1, "")]


async def test_runs_split_by_the_prefetch_window_and_given_back_keep_their_order() -> None:
    member = StubMember()
    sub = _subscription(member, {("a", 0): 0}, prefetch=3)
    sub.on_messages(member, [_message("a", 0, o) for o in range(2)])  # type: ignore[misc]
    sub.on_messages(member, [_message("a", 0, o) for o in range(2, 5)])  # type: ignore[misc]
    assert sub._buffered == 5
    head = await sub.fetch_records(100)  # the window: 3 of the run's 5
    assert head is not None
    assert head.bodies == [b"a-0-0", b"a-0-1", b"a-0-2"]
    assert sub._buffered == 2
    taken = head.take(2)
    head.nack()
    await sub.settle_records([head])
    # Back first, counted again; a record arriving now queues behind the rest.
    sub.on_messages(member, [_message("a", 0, 5)])  # type: ignore[list-item]
    assert sub._buffered == 5
    taken.nack()
    await sub.settle([taken])
    await eventually(lambda: sub._buffered == 6, within=5, what="the taken record back")
    out: list[Any] = []
    while sub._buffered:
        batch = await sub.fetch_records(100)
        assert batch is not None
        out += [batch._delivery(i) for i in range(len(batch))]
        batch.ack()
        await sub.settle_records([batch])
    assert [(d.coordinates, d.delivery_count) for d in out] == [
        ("a-0-2", 2),
        ("a-0-0", 2),
        ("a-0-1", 2),
        ("a-0-3", 1),
        ("a-0-4", 1),
        ("a-0-5", 1),
    ]
    state = sub._partitions[("a", 0)]
    assert state.outstanding == 0
    assert not state.offsets
    assert sub._unsettled == 0


async def test_a_partition_arriving_call_after_call_queues_in_bounded_runs() -> None:
    """Records of one partition join the buffer's last run up to ``_RUN_JOIN`` of them (a
    fetch of a few moves the rest of a run down: that must not grow with ``buffer``)."""
    member = StubMember()
    sub = _subscription(member, {("a", 0): 0}, prefetch=10_000)
    for first in range(0, 1800, 600):
        sub.on_messages(member, [_message("a", 0, o) for o in range(first, first + 600)])  # type: ignore[misc]
    assert [len(run) for run in sub._buffer.items] == [1200, 600]
    assert sub._buffered == 1800
    out = []
    while sub._buffered:
        out += await sub.fetch(7)
    assert [d.coordinates for d in out] == [f"a-0-{o}" for o in range(1800)]


async def test_calls_of_one_partition_taken_whole_or_record_by_record_alike() -> None:
    """A consume call of one held partition in rising offsets is buffered whole (checked
    by C loops); any other, record by record: both keep a partition's received offsets
    rising, drop what was received already, skip what a previous owner acked, and report
    errors."""
    member = StubMember()
    sub = _subscription(member, {("a", 0): 0, ("a", 1): 0}, prefetch=10_000)
    state = sub._partitions[("a", 0)]
    calls: list[list[Any]] = [
        [_message("a", 0, o) for o in range(5)],  # the usual: taken whole
        [_message("a", 0, 5), _message("a", 0, 5), _message("a", 0, 6)],  # 5 repeated
        [_message("a", 0, 9), _message("a", 0, 8)],  # falling: 8 was passed
        [_message("a", 0, 10), _message("a", 0, 12)],  # a gap (compacted): taken whole
        [_message("a", 0, 11), _message("a", 0, 13)],  # 11 received already: passed
        [_message("a", 0, 14), Message(error=KafkaError(KafkaError._TRANSPORT))],
        [_message("b", 0, 0), _message("b", 0, 1)],  # not held
    ]
    for call in calls:
        sub.on_messages(member, call)  # type: ignore[arg-type]
    assert len(member.errors) == 1
    assert state.next_offset == 15
    assert list(state.offsets) == [0, 1, 2, 3, 4, 5, 6, 9, 10, 12, 13, 14]
    skipped = sub._partitions[("a", 1)]
    skipped.skip = {1}  # acked by a previous owner above its commit: finished as it comes
    sub.on_messages(member, [_message("a", 1, o) for o in range(3)])  # type: ignore[misc]
    assert list(skipped.offsets) == [0, 1, 2]
    assert skipped.done == {1}
    out = []
    while sub._buffered:
        out += await sub.fetch(4)
    expected = [f"a-0-{o}" for o in (0, 1, 2, 3, 4, 5, 6, 9, 10, 12, 13, 14)] + ["a-1-0", "a-1-2"]
    assert [d.coordinates for d in out] == expected
    assert [d.record.body for d in out] == [c.encode() for c in expected]
