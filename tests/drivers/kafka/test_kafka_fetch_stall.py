"""Issue 23: a Kafka member that holds partitions with records waiting and fetches nothing,
or whose group has no coordinator while it is idle, is reported by health (no broker
needed: the member's measurements are fed by hand, at chosen times).

The same against a real lost coordinator: tests/services/test_kafka_coordinator_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from member_helpers import new_member

import hexa_event as he
from hexa_event.driver import Outcome, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaOptions
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.fetchwatch import FETCH_STALL_AFTER, FetchWatch
from hexa_event.drivers.kafka.member import COORDINATOR_DOWN_AFTER, Member
from hexa_event.testing import Collector
from hexa_event.testing.waiting import eventually

A, B = ("t", 0), ("t", 1)


def test_a_partition_with_records_waiting_starves_after_the_bound() -> None:
    watch = FetchWatch()
    assert watch.bound == FETCH_STALL_AFTER == 10.0
    assert watch.observe(100.0, {A: (50, 80), B: (7, 7)}) == []
    assert watch.observe(109.9, {A: (50, 80), B: (7, 7)}) == []
    (starved,) = watch.observe(110.0, {A: (50, 80), B: (7, 7)})  # B has nothing waiting
    assert (starved.key, starved.waiting, starved.since) == (A, 30, 100.0)
    # Records arrive (the position moves): clear at once, and the clock starts again.
    assert watch.observe(111.0, {A: (51, 80), B: (7, 7)}) == []
    assert watch.observe(120.9, {A: (51, 80)}) == []
    assert [s.key for s in watch.observe(121.0, {A: (51, 80)})] == [A]
    # Caught up with the end: nothing waits, nothing starves.
    assert watch.observe(140.0, {A: (80, 80)}) == []


def test_no_fetch_answer_at_all_starves_too_and_holding_back_does_not() -> None:
    watch = FetchWatch()
    assert watch.observe(0.0, {A: (50, -1001), B: (-1, -1001)}) == []
    starved = watch.observe(10.0, {A: (50, -1001), B: (-1, -1001)})
    assert [(s.key, s.waiting) for s in starved] == [(A, None), (B, None)]
    # The end became known but where the partition starts is not: cannot tell.
    assert watch.observe(11.0, {B: (-1, 30)}) == []
    # Holding back on purpose (the owner's buffer is full) starts every clock again.
    watch.observe(20.0, {A: (50, 80)})
    watch.hold()
    assert watch.observe(29.0, {A: (50, 80)}) == []
    assert watch.observe(30.0, {A: (50, 80)}) == []
    assert [s.key for s in watch.observe(39.0, {A: (50, 80)})] == [A]


class _Consumer:
    """What ``Member._measure_lag`` asks: positions and cached watermarks (set by the test)."""

    def __init__(self) -> None:
        self.positions: dict[tuple[str, int], int] = {}
        self.ends: dict[tuple[str, int], int] = {}

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), -1001)
            )
            for tp in tps
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached  # never a request to the broker from the member's thread
        return 0, self.ends.get((tp.topic, tp.partition), -1001)


def _stats(state: str, partitions: dict[int, str] | None = None) -> str:
    topics = {
        "t": {"partitions": {str(n): {"fetch_state": s} for n, s in (partitions or {}).items()}}
    }
    return json.dumps({"cgrp": {"state": state, "join_state": "steady"}, "topics": topics})


async def test_health_names_the_group_and_partitions_that_fetch_nothing_and_clears() -> None:
    sub = KafkaSubscription(KafkaOptions(), SubscriptionSpec(group="g", channels=("t",)), None)
    sub._loop = asyncio.get_running_loop()
    m = new_member(sub._loop, sub)
    sub._members = [m]
    m._owned = {A, B}
    m._committed = {A: 50, B: 20}  # where the assignment started
    c: Any = _Consumer()
    c.ends = {A: 170, B: 20}  # 120 records wait on t-0, none on t-1
    m._on_stats(_stats("up", {0: "active", 1: "active"}))
    m._measure_lag(c, now=100.0)
    assert m.lag == 120
    m._measure_lag(c, now=109.0)
    assert m.fetch_problem() is None
    assert sub.last_error is None
    m._measure_lag(c, now=110.0)
    error = sub.last_error or ""
    assert error.startswith("kafka consumer of group 'g' fetches nothing:"), error
    assert "t-0 (120 waiting, fetch state active)" in error
    assert "t-1" not in error
    assert "for 10 s" in error
    assert sub.status().error == error  # what receiver.health() reports as the reason

    # The owner's buffer is full: the member holds back on purpose, nothing to report.
    m.room.clear()
    m._measure_lag(c, now=111.0)
    assert m.fetch_problem() is None
    m.room.set()
    m._measure_lag(c, now=112.0)
    m._measure_lag(c, now=121.0)
    assert m.fetch_problem() is None
    m._measure_lag(c, now=122.0)
    assert m.fetch_problem() is not None

    # A record of t-0 handed out (the position moves): clear at the next measurement.
    c.positions[A] = 51
    m._measure_lag(c, now=123.0)
    assert m.fetch_problem() is None
    assert sub.last_error is None

    # A partition whose fetcher never answered (no end known) starves as well.
    c.ends[B] = -1001
    m._measure_lag(c, now=124.0)
    m._measure_lag(c, now=134.0)
    assert "t-1 (no fetch answer" in (sub.last_error or "")
    # Replaced or stopping: its successor reports.
    m.abandoned = True
    assert sub.last_error is None


async def test_an_idle_member_without_a_group_coordinator_is_reported() -> None:
    m = new_member(asyncio.get_running_loop())
    assert COORDINATOR_DOWN_AFTER == 10.0
    m._note_coordinator({"state": "up"}, 100.0)
    m._note_coordinator({"state": "wait-coord"}, 103.0)
    m._note_coordinator({"state": "query-coord"}, 112.9)
    assert m.fetch_problem() is None
    m._note_coordinator({"state": "query-coord"}, 113.0)
    assert m.fetch_problem() == (
        "has no group coordinator: librdkafka's group state has been 'query-coord' "
        "(not 'up') for 10 s"
    )
    m._note_coordinator({"state": "up"}, 114.0)
    assert m.fetch_problem() is None
    # From the statistics themselves (the member reads only the group's object).
    m._on_stats(_stats("wait-broker-transport"))
    assert m._coordinator_down_since is not None
    m._on_stats(_stats("up"))
    assert m._coordinator_down_since is None


async def test_a_replaced_members_late_revoke_leaves_its_replacement_alone() -> None:
    """The old member's revoke waits for its in-flight work; a replacement assigned the same
    partition meanwhile keeps it (else its records were dropped for good, nothing handled)."""
    from test_kafka_coordinator import _FakeMember, _Message, _receive

    sub = KafkaSubscription(
        KafkaOptions(revoke_timeout=30), SubscriptionSpec(group="g", channels=("t",)), None
    )
    sub._loop = asyncio.get_running_loop()
    old, new = _FakeMember(), _FakeMember()
    sub.on_assigned(old, [("t", 0, 10, "")])
    sub.on_messages(old, [_Message("t", 0, o) for o in range(10, 12)])
    deliveries = await sub.fetch(100)
    assert len(deliveries) == 2  # in flight: the revoke waits for them
    old.abandoned = True
    revoking = asyncio.create_task(sub.on_revoked(old, [("t", 0)]))
    await asyncio.sleep(0.05)
    assert not revoking.done()
    sub.on_assigned(new, [("t", 0, 10, "")])  # the replacement takes the partition over
    for delivery in deliveries:
        delivery.outcome = Outcome.ACK
    await sub.settle(deliveries)
    assert await asyncio.wait_for(revoking, 5) == []  # nothing of the replacement's
    assert sub.status().assignment == ("t-0",)
    assert sub._partitions[("t", 0)].member is new
    assert await _receive(sub, new, range(10, 13)) == ["t-0-10", "t-0-11", "t-0-12"]


class _SecretPause:
    """Pauses a member's partitions inside librdkafka behind its back (the member thinks
    it fetches), on the member's own thread, once records were fetched and not handed out
    (the thread waits there for librdkafka to fetch them, so the partitions' known end is
    above their position); resumes them when told."""

    def __init__(self, m: Member) -> None:
        self.pause, self.paused = threading.Event(), threading.Event()
        self.resume, self.resumed = threading.Event(), threading.Event()
        self.waiting = threading.Event()
        """Set while the member's thread waits (not polling) for records to be fetched."""
        original = m._run_commands

        def run_commands(consumer: Any) -> None:
            original(consumer)
            if self.pause.is_set() and not self.paused.is_set():
                self._pause_once_fetched(consumer)
            if self.resume.is_set() and not self.resumed.is_set():
                consumer.resume(consumer.assignment())
                self.resumed.set()

        m._run_commands = run_commands  # type: ignore[method-assign]

    def _pause_once_fetched(self, consumer: Any) -> None:
        held = consumer.assignment()
        self.waiting.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            positions = {(tp.topic, tp.partition): tp.offset for tp in consumer.position(held)}
            for tp in held:
                high = consumer.get_watermark_offsets(tp, cached=True)[1]
                if high > max(positions.get((tp.topic, tp.partition), -1), 0):
                    consumer.pause(held)
                    self.paused.set()
                    return
            time.sleep(0.01)  # on the member's thread: librdkafka fetches meanwhile


@pytest.mark.kafka
async def test_a_member_whose_fetching_stops_is_reported_against_the_broker(
    kafka_bootstrap: str,
) -> None:
    """Against the real broker (the shared one, never restarted): a consumer whose
    partitions stop fetching inside librdkafka with records waiting is reported within the
    bound, naming the group and partition, and clears once records flow again."""
    tag = uuid.uuid4().hex[:8]
    channel, action = f"starve-{tag}", f"starve-act-{tag}"
    conn = he.connect(f"kafka://{kafka_bootstrap}", partitions=1)
    await conn.provision([channel])
    got = Collector()
    receiver = conn.receiver("starve")

    @receiver.subscribe(channel, action=action)
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        got.add(msg.payload["n"])

    emitter = conn.emitter()
    try:
        async with receiver:
            await emitter.emit_many([he.Event(channel, "k", {"n": n}) for n in range(5)])
            await got.wait_for(5, within=60)
            subscription: Any = receiver._subs[action].subscription
            (m,) = [x for x in subscription._members if x.group == action]
            secret = _SecretPause(m)
            secret.pause.set()
            # Emit only once the thread waits there (a poll under way would take them).
            await eventually(secret.waiting.is_set, within=30, what="the thread held")
            await emitter.emit_many([he.Event(channel, "k", {"n": n}) for n in range(5, 25)])
            await eventually(secret.paused.is_set, within=30, what="records fetched, paused")
            began = time.monotonic()
            await eventually(
                lambda: not receiver.health()["healthy"],
                within=FETCH_STALL_AFTER + 20,
                what="health reports the member that fetches nothing",
            )
            took = time.monotonic() - began
            reason = receiver.health()["reason"]
            assert f"kafka consumer of group {action!r} fetches nothing" in reason, reason
            assert f"{channel}-0 (20 waiting" in reason, reason
            assert took >= FETCH_STALL_AFTER - 1, (took, reason)
            assert len(got.items) == 5
            secret.resume.set()
            await got.wait_for(25, within=60)
            await eventually(
                lambda: receiver.health()["healthy"], within=5, what="health clean again"
            )
    finally:
        await conn.close()
