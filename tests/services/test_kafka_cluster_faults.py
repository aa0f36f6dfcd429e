"""Fault tests on the three-node Kafka cluster, each with 10,000 events in flight.

Topics are provisioned through the driver's options with replication factor 3 and
``min.insync.replicas=2``; the producer is idempotent with ``acks=all``. Each test emits
in batches while a receiver handles, and breaks the cluster in the middle:

- the leader of a busy partition is SIGKILLed, and started again later;
- all three nodes are restarted one after the other (graceful, data kept);
- two nodes are killed: emits fail with a clear error after ``delivery_timeout`` instead of
  hanging, and succeed again once one node is back.

Every event is handled (nothing lost); a redelivery carries the producer's event id, so it
is recognisable; events of one key reach the handler in emit order (a redelivery repeats
events already seen, it never lets a later event overtake an earlier one). See
docs/kafka-cluster.md. Run alone: ``pytest -m kafka_cluster tests/services``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import hexa_event
from fault_helpers import acknowledged
from hexa_event.context import Context
from hexa_event.errors import DriverError
from hexa_event.event import Event, Message
from hexa_event_services import Service

pytestmark = [pytest.mark.kafka_cluster, pytest.mark.timeout(600)]

admin_mod = pytest.importorskip("confluent_kafka.admin")

TOTAL = int(os.environ.get("HEXA_FAULT_EVENTS", "10000"))
KEYS = 50
BATCH = 250
TAIL = 1000
"""The last events, emitted once the fault is over (the load outlasts every fault)."""
MAX_AHEAD = 2000
"""Emitting stays at most this many events ahead of handling: both are in flight."""


def _cluster_url(bootstrap: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"kafka://{bootstrap}" + (f"?{query}" if query else "")


async def _connect(bootstrap: str, delivery_timeout: float) -> Any:
    return hexa_event.connect(
        _cluster_url(bootstrap),
        partitions=3,
        replication_factor=3,
        topic_config={"min.insync.replicas": "2"},
        delivery_timeout=delivery_timeout,
    )


class Load:
    """10,000 events over 50 keys, emitted in batches and handled by one receiver."""

    def __init__(
        self, bootstrap: str, delivery_timeout: float = 60.0, rate: float | None = None
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.channel, self.action = f"cluster-{tag}", f"cluster-act-{tag}"
        self.delivery_timeout = delivery_timeout
        self.rate = rate
        """Events per second to emit at most while the fault lasts (None: as fast as
        handling keeps up)."""
        self.events = [
            Event(self.channel, f"k{i % KEYS}", {"i": i}, id=f"{tag}-{i}") for i in range(TOTAL)
        ]
        self.handled: Counter[str] = Counter()
        self.seen_per_key: dict[str, list[int]] = defaultdict(list)
        self.emitted = 0
        self.fault_done = asyncio.Event()
        """Set when the fault is over: the last events are emitted only then."""
        self.emit_failures: list[tuple[float, str]] = []
        """(seconds the failing emit took, its message) for every failed batch."""

    async def run(self, fault: Callable[[Load], Awaitable[None]]) -> None:
        """Emit everything while ``fault`` runs; then wait until every event is handled."""
        emit_conn = await _connect(self.bootstrap, self.delivery_timeout)
        recv_conn = await _connect(self.bootstrap, 60.0)
        probe = f"{self.channel}-probe"
        await emit_conn.provision([self.channel, probe])
        await acknowledged(emit_conn.emitter(), probe, within=240)
        await self.check_topic(within=60)
        receiver = recv_conn.receiver("cluster-fault", drain_timeout=10)

        @receiver.subscribe(self.channel, action=self.action)
        async def handle(ctx: Context, msg: Message[Any]) -> None:
            assert ctx.event_id == msg.id
            self.handled[msg.id] += 1
            self.seen_per_key[msg.key].append(int(msg.payload["i"]))

        try:
            async with receiver:
                emitting = asyncio.create_task(self.emit_all(emit_conn.emitter()))
                try:
                    await fault(self)
                finally:
                    self.fault_done.set()
                await asyncio.wait_for(emitting, 300)
                await self.wait_handled(TOTAL, 240)
        finally:
            await emit_conn.close()
            await recv_conn.close()
            self.delete_topics()

    def delete_topics(self) -> None:
        """Drop the test's topics, so that the cluster's restarts stay quick."""
        admin = admin_mod.AdminClient({"bootstrap.servers": self.bootstrap})
        names = [
            t
            for t in admin.list_topics(timeout=10).topics
            if t.startswith((self.channel, self.action))
        ]
        if names:
            for future in admin.delete_topics(names).values():
                future.exception(timeout=30)

    async def check_topic(self, within: float) -> None:
        """The driver provisioned the topic with 3 replicas and min.insync.replicas=2 (the
        metadata of a node an earlier test restarted may lag: asked until ``within``)."""
        admin = admin_mod.AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + within
        while True:
            listed = await asyncio.to_thread(admin.list_topics, topic=self.channel, timeout=10)
            md = listed.topics[self.channel]
            if md.error is None and len(md.partitions) == 3:
                break
            assert time.monotonic() < deadline, f"topic metadata: {md.error}, {md.partitions}"
            await asyncio.sleep(0.5)
        assert all(len(p.replicas) == 3 for p in md.partitions.values())
        resource = admin_mod.ConfigResource(admin_mod.ResourceType.TOPIC, self.channel)
        configs = admin.describe_configs([resource])[resource].result(timeout=30)
        assert configs["min.insync.replicas"].value == "2"

    async def emit_all(self, emitter: Any) -> None:
        first = time.monotonic()
        for start in range(0, TOTAL, BATCH):
            if self.rate is not None and not self.fault_done.is_set():
                await asyncio.sleep(max(0.0, first + start / self.rate - time.monotonic()))
            if start >= TOTAL - TAIL:  # so that the load lasts as long as the fault
                await asyncio.wait_for(self.fault_done.wait(), 300)
            batch = self.events[start : start + BATCH]
            deadline = time.monotonic() + 240
            while len(self.handled) < start - MAX_AHEAD:
                assert time.monotonic() < deadline, "handling stopped making progress"
                await asyncio.sleep(0.02)
            while True:
                began = time.monotonic()
                try:
                    await emitter.emit_many(batch)
                    break
                except DriverError as exc:
                    # Re-emitting keeps the ids: the receiver recognises the duplicates.
                    self.emit_failures.append((time.monotonic() - began, str(exc)))
                if time.monotonic() >= deadline:
                    raise AssertionError(f"emits kept failing: {self.emit_failures[-1]}")
                await asyncio.sleep(0.5)
            self.emitted = start + len(batch)

    async def wait_handled(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.handled) < count:
            assert time.monotonic() < deadline, f"only {len(self.handled)} of {count} handled"
            await asyncio.sleep(0.05)

    def leader_of_busiest_partition(self, nodes: list[Service]) -> Service:
        """The node leading partition 0 (keys spread evenly: every partition is busy)."""
        admin = admin_mod.AdminClient({"bootstrap.servers": self.bootstrap})
        md = admin.list_topics(topic=self.channel, timeout=10).topics[self.channel]
        node_id = md.partitions[0].leader
        return next(n for n in nodes if getattr(n, "index", None) == node_id)

    async def new_leader(self, old: Service, within: float) -> None:
        """Wait until partition 0 is led by another node than ``old``."""
        admin = admin_mod.AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + within
        while True:
            md = await asyncio.to_thread(admin.list_topics, topic=self.channel, timeout=5)
            leader = md.topics[self.channel].partitions[0].leader
            if leader not in (-1, getattr(old, "index", None)):
                return
            assert time.monotonic() < deadline, "no new leader for partition 0"
            await asyncio.sleep(0.2)

    def verify(self) -> int:
        """Nothing lost, only known ids, order per key kept; returns the redeliveries."""
        expected = {e.id for e in self.events}
        assert set(self.handled) == expected, f"lost: {len(expected - set(self.handled))}"
        for key, seen in self.seen_per_key.items():
            first_seen = [i for n, i in enumerate(seen) if i not in seen[:n]]
            assert first_seen == sorted(first_seen), f"order of {key} broken: {seen[:50]}"
        return sum(n - 1 for n in self.handled.values())


async def _stop(node: Service, how: str) -> None:
    await asyncio.to_thread(node.kill if how == "kill" else node.stop)


async def _start(node: Service) -> None:
    await asyncio.to_thread(node.start, False)


async def test_leader_killed_and_restarted(
    kafka_cluster: list[Service], kafka_cluster_bootstrap: str
) -> None:
    load = Load(kafka_cluster_bootstrap)
    timeline: list[str] = []

    async def fault(load: Load) -> None:
        await load.wait_handled(TOTAL // 5, 120)
        leader = load.leader_of_busiest_partition(kafka_cluster)
        timeline.append(f"SIGKILL {leader.name} at {load.emitted} emitted")
        killed_at = time.monotonic()
        await _stop(leader, "kill")
        await load.new_leader(leader, within=60)
        timeline.append(f"partition 0 has a new leader after {time.monotonic() - killed_at:.1f}s")
        await load.wait_handled(load.emitted + BATCH, 180)  # handling goes on without it
        timeline.append(f"restart {leader.name} at {len(load.handled)} handled")
        await _start(leader)

    began = time.monotonic()
    await load.run(fault)
    redeliveries = load.verify()
    assert int(timeline[0].split()[3]) < TOTAL, "emitting had ended before the kill"
    print(
        f"\nleader kill: {TOTAL} events in {time.monotonic() - began:.1f}s, "
        f"{redeliveries} redeliveries, {len(load.emit_failures)} emit batches retried; "
        + "; ".join(timeline)
    )


async def test_rolling_restart_under_load(
    kafka_cluster: list[Service], kafka_cluster_bootstrap: str
) -> None:
    # Paced while the restarts last (each takes 15-40 s), so that all three happen while
    # events are emitted and handled; the rest goes at full speed afterwards.
    load = Load(kafka_cluster_bootstrap, rate=80)
    timeline: list[str] = []

    async def fault(load: Load) -> None:
        await load.wait_handled(TOTAL // 20, 120)
        for node in kafka_cluster:
            timeline.append(f"restart {node.name} at {load.emitted} emitted")
            began = time.monotonic()
            await asyncio.to_thread(node.restart, True)
            timeline.append(f"({time.monotonic() - began:.1f}s)")

    began = time.monotonic()
    await load.run(fault)
    redeliveries = load.verify()
    assert int(timeline[-2].split()[3]) < TOTAL, "emitting had ended before the last restart"
    print(
        f"\nrolling restart: {TOTAL} events in {time.monotonic() - began:.1f}s, "
        f"{redeliveries} redeliveries, {len(load.emit_failures)} emit batches retried; "
        + "; ".join(timeline)
    )


async def test_two_nodes_down_emits_fail_then_recover(
    kafka_cluster: list[Service], kafka_cluster_bootstrap: str
) -> None:
    delivery_timeout = 8.0
    load = Load(kafka_cluster_bootstrap, delivery_timeout=delivery_timeout)
    timeline: list[str] = []

    async def fault(load: Load) -> None:
        await load.wait_handled(TOTAL // 5, 120)
        down = kafka_cluster[1:]
        timeline.append(f"SIGKILL {down[0].name} and {down[1].name} at {load.emitted} emitted")
        await asyncio.gather(*(_stop(n, "kill") for n in down))
        deadline = time.monotonic() + 4 * delivery_timeout + 60
        while len(load.emit_failures) < 2:  # the emitter keeps trying and failing
            assert time.monotonic() < deadline, "emits neither failed nor succeeded"
            await asyncio.sleep(0.2)
        timeline.append(f"{len(load.emit_failures)} emits failed; start {down[0].name}")
        await _start(down[0])
        timeline.append(f"{down[0].name} back at {load.emitted} emitted")

    await load.run(fault)
    redeliveries = load.verify()
    took, message = load.emit_failures[0]
    # Failed after the timeout, not before and not much later; the message says why.
    assert delivery_timeout - 1 <= took <= delivery_timeout + 30, took
    assert "timed out" in message.lower(), message
    assert all(t <= delivery_timeout + 30 for t, _ in load.emit_failures)
    print(
        f"\ntwo down: {len(load.emit_failures)} emit batches failed after "
        f"{min(t for t, _ in load.emit_failures):.1f}-{max(t for t, _ in load.emit_failures):.1f}s"
        f" ({message!r}), all {TOTAL} handled, {redeliveries} redeliveries; " + "; ".join(timeline)
    )
    await _start(kafka_cluster[2])
