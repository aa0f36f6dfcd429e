"""Issue 23: a Kafka consumer group whose group coordinator stops answering comes back.

On the three-node cluster (``scripts/services up kafka-cluster``), while events of several
keys are emitted and handled, the broker coordinating the receiver's consumer group (as
``AdminClient.describe_consumer_groups`` names it) stops answering:

- (a) it is SIGSTOPped (its whole process group) for longer than the group's session
  timeout, then SIGCONTed: its sockets stay open and nothing answers, as the soak's
  coordinator did;
- (b) it is SIGKILLed, and started again (its data kept) once the group is back.

The SIGSTOP runs twice: with the default ``KafkaOptions.coordinator_timeout`` (librdkafka
rejoins by itself) and with 3 s (the consumer is replaced while the coordinator is silent).

Asserted: every event is handled (redeliveries carry the producer's id); the receiver holds
its partitions again and goes on handling within ``BACK_WITHIN`` seconds of the fault;
``receiver.health()`` is unhealthy, with a reason naming the group, whenever the receiver
holds no partitions, or holds all of them and has handled nothing for ``STALL`` seconds with
events waiting (the fetch-stall rule, :mod:`hexa_event.drivers.kafka.fetchwatch`); and it is
healthy again within ``CLEAR_WITHIN`` seconds once handling goes on. A hang leaves every
thread's stack in the output (faulthandler); a receiver standing still while it holds its
partitions and health says healthy leaves the stacks and each consumer's librdkafka state
(assignment, pause, fetch state and positions from its statistics) once, when it happens,
and a failure prints the timeline and that state. Run alone: ``pytest -m
kafka_cluster tests/services/test_kafka_coordinator_faults.py``. See "When the group
coordinator is lost" in docs/engines/kafka.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import hexa_event
from fault_helpers import (
    FaultFlow,
    acknowledged,
    dump_stacks,
    stacks_after,
    stacks_before_timeout,
    stall,
)
from hexa_event.context import Context
from hexa_event.drivers.kafka.fetchwatch import FETCH_STALL_AFTER
from hexa_event.event import Message
from hexa_event.receiver import Receiver
from hexa_event_services import Service

pytestmark = [pytest.mark.kafka_cluster, pytest.mark.timeout(600)]

admin_mod = pytest.importorskip("confluent_kafka.admin")

TOTAL = int(os.environ.get("HEXA_COORDINATOR_FAULT_EVENTS", "4000"))
SESSION_TIMEOUT = float(os.environ.get("HEXA_COORDINATOR_SESSION_TIMEOUT", "10"))
"""The consumers' ``session.timeout.ms`` in seconds. librdkafka's default, 45, outlasts the
coordinator's move to another node (the group usually keeps its partitions); 10 keeps the
test short and lets the session run out during the stop, so the loss is tested too."""
PAUSED_FOR = SESSION_TIMEOUT + 10
"""How long the coordinator is SIGSTOPped: longer than the session timeout."""
GRACE = 1.0
"""Seconds a sample may lag behind the state it shows (the sampler's period and more)."""
STALL = FETCH_STALL_AFTER + 1.0 + GRACE
"""Seconds of standing still (events waiting, none handled, every partition held) by which
health must say so: the fetch-stall bound, the members' 1 s measurement, and ``GRACE``."""
BACK_WITHIN = 2 * SESSION_TIMEOUT + 60
"""Seconds from the fault until the receiver holds its partitions again and handles."""
CLEAR_WITHIN = 30.0
"""Seconds after handling went on by which health must be clean again."""


@pytest.fixture(autouse=True)
def _stacks_if_hung(request: pytest.FixtureRequest) -> Iterator[None]:
    """A hang (a consumer or close blocked in librdkafka) leaves every thread's stack."""
    with stacks_after(stacks_before_timeout(request.config, request.node)):
        yield


def consumer_state(member: Any) -> dict[str, Any]:
    """What a Kafka consumer (``Member``) stands on, read from any thread: its plain fields
    (assignment, pause, room, heartbeat, lag, errors...) and, from librdkafka's last
    statistics, the group's state and each held partition's (fetch state, positions)."""
    state: dict[str, Any] = {}
    for name, value in vars(member).items():
        if isinstance(value, threading.Event):
            value = value.is_set()
        if isinstance(value, str | int | float | bool | set | None) and name != "_stats":
            state[name] = sorted(value) if isinstance(value, set) else value
    state["heartbeat_age"] = round(time.monotonic() - member.heartbeat, 1)
    stats = json.loads(member._stats or "{}")
    cgrp = stats.get("cgrp", {})
    state["cgrp"] = {k: cgrp.get(k) for k in ("state", "join_state", "rebalance_reason")}
    state["partitions"] = {
        f"{topic}-{number}": p
        for topic, t in stats.get("topics", {}).items()
        for number, p in t.get("partitions", {}).items()
        if (topic, int(number)) in member._owned
    }
    return state


@dataclass
class Sample:
    at: float
    healthy: bool
    reason: str
    partitions: int
    handled: int
    emitted: int


class Run:
    """One receiver of one action on the cluster, an emitter, and the health samples."""

    def __init__(
        self, nodes: list[Service], bootstrap: str, coordinator_timeout: float = 60.0
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.nodes, self.bootstrap = nodes, bootstrap
        self.channel, self.action = f"coord-{tag}", f"coord-act-{tag}"
        self.flow = FaultFlow(self.channel, tag, total=TOTAL, batch=100, max_lag=800)
        self.samples: list[Sample] = []
        self.timeline: list[str] = []
        self.dumped = False
        self.began = time.monotonic()
        self.fault_at = 0.0
        self.partitions = 0
        """Partitions the receiver holds when all is well (the channel's and its retry
        channels')."""
        options: dict[str, Any] = {
            "partitions": 3,
            "replication_factor": 3,
            "topic_config": {"min.insync.replicas": "2"},
            "delivery_timeout": 60,
        }
        self.emitting = hexa_event.connect(f"kafka://{bootstrap}", **options)
        self.receiving = hexa_event.connect(
            f"kafka://{bootstrap}",
            **options,
            consumer_config={"session.timeout.ms": int(SESSION_TIMEOUT * 1000)},
            coordinator_timeout=coordinator_timeout,
        )
        self.receiver: Receiver = self.receiving.receiver("coord", drain_timeout=10)
        self.receiver.subscribe(self.channel, action=self.action, handler=self.handle)

    async def handle(self, ctx: Context, msg: Message[Any]) -> None:
        await asyncio.sleep(0.002)  # a little work, so records are in flight at the fault
        await self.flow.handle(ctx, msg)

    def note(self, text: str) -> None:
        self.timeline.append(f"+{time.monotonic() - self.began:.1f}s {text}")

    def sample(self) -> Sample:
        health = self.receiver.health()
        action = health["actions"].get(self.action, {})
        return Sample(
            time.monotonic(),
            bool(health["healthy"]),
            str(health["reason"]),
            len(action.get("assignment", [])),
            len(self.flow.handled),
            len(self.flow.emitted),
        )

    async def sampling(self) -> None:
        """Sample health every 0.1 s; note in the timeline when the partitions held or the
        health verdict change, and the progress every 5 s."""
        progress_at = 0.0
        while True:
            s = self.sample()
            last = self.samples[-1] if self.samples else None
            if last is not None and self.fault_at:
                if s.at - progress_at >= 5:
                    progress_at = s.at
                    self.note(f"[{s.handled} handled, {s.emitted} emitted]")
                if s.partitions != last.partitions:
                    self.note(f"holds {s.partitions} partitions ({s.handled} handled)")
                if s.healthy != last.healthy:
                    self.note(f"healthy={s.healthy} {s.reason[:300]!r}")
            self.samples.append(s)
            if self.fault_at and not self.dumped:
                self.dump_if_still(s)
            await asyncio.sleep(0.1)

    def dump_if_still(self, s: Sample) -> None:
        """Once, when the receiver holds its partitions, has handled nothing for half of
        ``STALL`` with events waiting and health says healthy: every stack and each
        consumer's state, into the output (what a stall in CI leaves to investigate)."""
        if not s.healthy:
            return  # reported (a commit waiting for the coordinator, ...)
        still_since = _since(self.samples, s, functools.partial(_still, s.handled))
        held_since = _since(self.samples, s, self._holds_all)
        if still_since is None or held_since is None:
            return
        if s.at - max(still_since, held_since) < STALL / 2:
            return
        self.dumped = True
        states = [consumer_state(m) for m in self.members()]
        self.note(f"standing still while holding its partitions: {s}; consumers: {states}")
        dump_stacks(f"standing still while holding its partitions: {s}; consumers: {states}")

    def members(self) -> list[Any]:
        """The receiver's Kafka consumers (for their state, when it stands still)."""
        subscription = self.receiver._subs[self.action].subscription
        return list(getattr(subscription, "_members", []))

    def _holds_all(self, s: Sample) -> bool:
        return s.partitions >= self.partitions > 0

    def coordinator(self) -> Service:
        """The node coordinating the action's consumer group."""
        admin = admin_mod.AdminClient({"bootstrap.servers": self.bootstrap})
        group = admin.describe_consumer_groups([self.action], request_timeout=10)[self.action]
        node_id = group.result(timeout=20).coordinator.id
        return next(n for n in self.nodes if getattr(n, "index", None) == node_id)

    async def back(self, within: float) -> float:
        """Wait until the receiver holds all its partitions again and 200 more events were
        handled (or every event that may be emitted during the fault: emitting stops
        ``max_lag`` events after the fault until the fault is over, so a receiver that
        caught up meanwhile has no 200 more to handle); the seconds since the fault."""
        deadline = self.fault_at + within
        while self.sample().partitions < self.partitions:
            if time.monotonic() > deadline:
                stall(f"the receiver did not get its partitions back: {self.samples[-1]}")
            await asyncio.sleep(0.1)
        held = time.monotonic() - self.fault_at
        self.note(f"holds its {self.partitions} partitions again {held:.1f}s after the fault")
        at = len(self.flow.handled)
        # Emitting stops here until the fault is over (FaultFlow.fault_at).
        held_at = self.flow._hold if self.flow._hold is not None else self.flow.total
        target = min(at + 200, held_at, self.flow.total)
        await self.flow.wait_handled(target, within=max(1.0, deadline - time.monotonic()))
        went_on = time.monotonic() - self.fault_at
        caught_up = f" (all {target} emitted during the fault)" if target < at + 200 else ""
        self.note(f"handling went on {went_on:.1f}s after the fault{caught_up}")
        return went_on

    async def cluster_answers(self, within: float) -> None:
        probe = f"{self.channel}-probe"
        await self.emitting.provision([probe])
        await acknowledged(self.emitting.emitter(), probe, within, self.note)

    async def run(self, fault: Callable[[Run], Awaitable[None]]) -> None:
        try:
            await self.cluster_answers(within=240)
            await self.emitting.provision([self.channel])
            async with self.receiver:
                sampler = asyncio.create_task(self.sampling())
                emitting = asyncio.create_task(self.flow.emit_all(self.emitting.emitter()))
                try:
                    await self.flow.wait_handled(self.flow.total // 5, within=120)
                    self.partitions = self.sample().partitions
                    assert self.partitions >= 3, self.samples[-1]
                    # A fresh group's first seconds may show a transient error (a retry
                    # topic's offsets looked up while its metadata spreads).
                    await self.wait_clear(CLEAR_WITHIN)
                    self.fault_at = time.monotonic()
                    await self.flow.fault_at(len(self.flow.handled), "fault", lambda: fault(self))
                    await asyncio.wait_for(emitting, 240)
                    await self.flow.wait_handled(self.flow.total, within=180)
                    self.clear_after = await self.wait_clear(CLEAR_WITHIN)
                except BaseException:
                    # What a failure in CI leaves to investigate: the timeline and each
                    # consumer's state (the stacks are in the output already).
                    states = [consumer_state(m) for m in self.members()]
                    print(f"\nfailed: {'; '.join(self.timeline)}\nconsumers: {states}")
                    raise
                finally:
                    sampler.cancel()
                    emitting.cancel()
        finally:
            await self.emitting.close()
            await self.receiving.close()
            self.delete_topics()

    async def wait_clear(self, within: float) -> float:
        began = time.monotonic()
        while not self.receiver.health()["healthy"]:
            if time.monotonic() - began > within:
                stall(f"health still unhealthy: {self.receiver.health()['reason']}")
            await asyncio.sleep(0.1)
        return time.monotonic() - began

    def delete_topics(self) -> None:
        """Drop the test's topics, so that the cluster's restarts stay quick (best effort:
        after a failure a node may still be down)."""
        with contextlib.suppress(Exception):
            admin = admin_mod.AdminClient({"bootstrap.servers": self.bootstrap})
            names = [
                t
                for t in admin.list_topics(timeout=10).topics
                if t.startswith((self.channel, self.action))
            ]
            if names:
                for future in admin.delete_topics(names).values():
                    future.exception(timeout=30)

    def check_health(self, went_on: float) -> None:
        """Health told the truth from the fault until handling went on."""
        end = self.fault_at + went_on
        window = [s for s in self.samples if self.fault_at <= s.at <= end]
        said: list[str] = []
        for s in window:
            if not s.healthy and s.reason not in said:
                said.append(s.reason)
        # Whenever it held no partitions (since GRACE ago), health said so, naming the group.
        for s in window:
            empty_since = _since(self.samples, s, _holds_nothing)
            if empty_since is not None and s.at - empty_since >= GRACE:
                why = (
                    f"held no partitions for {s.at - empty_since:.1f}s at "
                    f"+{s.at - self.fault_at:.1f}s, health said: {s}; {self.timeline}"
                )
                assert not s.healthy, why
                assert self.action in s.reason, why
        # Whenever it held all its partitions and handled nothing for STALL seconds with
        # events waiting, health said so (the fetch-stall rule).
        for s in window:
            still_since = _since(self.samples, s, functools.partial(_still, s.handled))
            held_since = _since(self.samples, s, self._holds_all)
            if still_since is None or held_since is None:
                continue
            since = max(still_since, held_since)
            if s.at - since >= STALL:
                why = (
                    f"held its partitions and handled nothing for {s.at - since:.1f}s at "
                    f"+{s.at - self.fault_at:.1f}s and health said: {s}; {self.timeline}"
                )
                assert not s.healthy, why
                assert self.action in s.reason, why
        assert said, f"health never reported the lost coordinator: {self.timeline}"

    def report(self, name: str, went_on: float) -> str:
        redeliveries = self.flow.verify()
        return (
            f"\n{name}: {self.flow.total} events, handled all, {redeliveries} redeliveries, "
            f"{self.flow.emit_retries} emit batches retried; back and handling "
            f"{went_on:.1f}s after the fault, health clean {self.clear_after:.1f}s after the "
            f"end; {'; '.join(self.timeline)}"
        )


def _holds_nothing(s: Sample) -> bool:
    return s.partitions == 0


def _still(handled: int, s: Sample) -> bool:
    """Nothing handled since ``handled`` while events wait."""
    return s.handled == handled and s.emitted > s.handled


def _since(samples: list[Sample], at: Sample, holds: Callable[[Sample], bool]) -> float | None:
    """When ``holds`` began to be true without a break up to the sample ``at`` (None when it
    is false at ``at``)."""
    if not holds(at):
        return None
    start = at.at
    for s in reversed(samples):
        if s.at > at.at:
            continue
        if not holds(s):
            break
        start = s.at
    return start


@contextlib.asynccontextmanager
async def paused(node: Service) -> AsyncIterator[None]:
    """``node``'s whole process group stopped (SIGSTOP) for the block, continued after it
    whatever happens (a node left stopped would break every later test)."""
    pid = node.pid()
    assert pid is not None, f"{node.name} is not running"
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


@pytest.mark.parametrize("coordinator_timeout", [60.0, 3.0], ids=["rejoins", "replaced"])
async def test_coordinator_paused_past_the_session_timeout(
    kafka_cluster: list[Service], kafka_cluster_bootstrap: str, coordinator_timeout: float
) -> None:
    """With the default ``coordinator_timeout`` librdkafka rejoins by itself once another
    node coordinates the group; with a short one the consumer is replaced first (a fresh
    member id joins), and what it settled is kept."""
    run = Run(kafka_cluster, kafka_cluster_bootstrap, coordinator_timeout)
    went_on = 0.0

    async def fault(run: Run) -> None:
        nonlocal went_on
        node = await asyncio.to_thread(run.coordinator)
        run.note(f"SIGSTOP {node.name} (the group's coordinator) for {PAUSED_FOR:.0f}s")
        async with paused(node):
            # The fault's length, whatever the receiver does meanwhile (the sampler notes it).
            await asyncio.sleep(PAUSED_FOR)
        run.note(f"SIGCONT {node.name}")
        went_on = await run.back(BACK_WITHIN)

    await run.run(fault)
    print(run.report(f"coordinator paused, coordinator_timeout {coordinator_timeout:g}", went_on))
    run.check_health(went_on)
    replaced = [s.reason for s in run.samples if "replacing it" in s.reason]
    assert bool(replaced) == (coordinator_timeout < PAUSED_FOR), (replaced[:1], run.timeline)


async def test_coordinator_killed_and_started_again(
    kafka_cluster: list[Service], kafka_cluster_bootstrap: str
) -> None:
    run = Run(kafka_cluster, kafka_cluster_bootstrap)
    went_on = 0.0

    async def fault(run: Run) -> None:
        nonlocal went_on
        node = await asyncio.to_thread(run.coordinator)
        run.note(f"SIGKILL {node.name} (the group's coordinator)")
        await asyncio.to_thread(node.kill)
        try:
            went_on = await run.back(BACK_WITHIN)
        finally:
            await asyncio.to_thread(node.start, False)
        run.note(f"{node.name} started again")

    await run.run(fault)
    print(run.report("coordinator killed", went_on))
    run.check_health(went_on)
