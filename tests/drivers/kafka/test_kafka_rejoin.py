"""A consumer resumes soon after its broker restarts: no member is replaced while the
brokers do not answer.

A member replaced while its coordinator was unreachable (past ``coordinator_timeout``)
could not leave its group: its LeaveGroup had no coordinator to go to, or reached the
restarted broker while it was still loading the group (``COORDINATOR_LOAD_IN_PROGRESS``).
The broker loads the group with that member and waits for its session
(``session.timeout.ms``, 45 s) before the replacement's rebalance completes: the
subscription's partitions stood still for 48.7 s after the broker was back. The member
itself recovers as soon as the coordinator answers (0.4-3.5 s), so the coordinator timeout
now counts only while the brokers answer (:meth:`Member.without_coordinator`).

On main's code every run replaced members while the broker was down (the deterministic
check); whether their sessions then outlived the restart depended on their LeaveGroup
racing the group's load (lost in some runs on this small broker, the stall check). Apart
from that, in about one group in twenty here librdkafka's synchronous commit never came back
after the restart and the member stopped heartbeating (the broker dropped it 45 s after
loading the group): it is replaced once the other members see the brokers answer, and its
session still holds the group for ``session.timeout.ms``. The test reports such a group (a
warning) instead of judging its resume time: that is librdkafka's defect, not this one.

The restarts are of a private single-node broker (``kafka-rejoin``, 127.0.0.1:19892 unless
``HEXA_KAFKA_REJOIN_BOOTSTRAP`` says otherwise, data in the services' run directory), never
the shared one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError
from member_helpers import new_member

from hexa_event.context import Context
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver, KafkaOptions, consumer, member
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.emitter import Emitter
from hexa_event.errors import DriverError
from hexa_event.event import Event, Message
from hexa_event.receiver import Receiver
from hexa_event_services import Service
from hexa_event_services.config import ServiceError, is_ci
from hexa_event_services.definitions.kafka import Kafka

log = logging.getLogger(__name__)

_ACTIONS = 4
"""Subscriptions (groups) of the restart test: a member replaced during the outage raced
the coordinator's load with its LeaveGroup (and lost in some runs): more groups, more
races."""
_COORDINATOR_TIMEOUT = 6.0
"""Short, so that the outage outlasts it (as a restart longer than the default 60 s does),
and longer than a restarted broker takes to load the groups (2-5 s here)."""
_OUTAGE = 8.0
"""Seconds the broker stays down before it is started again (which takes 5-30 s here): past
the coordinator timeout, well short of the session (``_SESSION``). An outage past the session
timeout costs a rejoin under a new member id whatever the driver does (librdkafka drops
its member id, and the restarted broker waits for the old one's session); one close to it
makes members lose their partitions at the reconnection."""
_SESSION = 60.0
"""The consumers' ``session.timeout.ms`` (librdkafka's default is 45 s): a broker started on
this loaded machine took up to 30 s, and an outage must stay well short of the session."""
_RESUME_BOUND = 20.0
"""Seconds after the broker is back by which every action handles again (the stall is the
session timeout; a consumer that rejoins by itself resumed in 0.4-3.5 s)."""


class RejoinKafka(Kafka):
    """A private single node (broker and controller), like the shared ``kafka``."""

    name = "kafka-rejoin"
    stop_timeout = 30.0
    heap_env: ClassVar[str] = "HEXA_KAFKA_REJOIN_HEAP"
    default_heap: ClassVar[str] = "-Xms128m -Xmx512m"

    @property
    def url(self) -> str:
        return os.environ.get("HEXA_KAFKA_REJOIN_BOOTSTRAP") or "127.0.0.1:19892"


@pytest.fixture(scope="module")
def rejoin_broker() -> Iterator[Service]:
    """The private broker, started fresh for this module and stopped after it."""
    broker = RejoinKafka()
    if broker.is_ready(timeout=2.0):  # left over: start from a clean group state
        broker.stop()
    try:
        broker.start(fresh=True)
    except ServiceError as exc:
        message = f"the private Kafka {broker.name!r} could not start: {exc}"
        if is_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield broker
    broker.stop()


# -- the rule, without a broker ----------------------------------------------------------------


async def test_the_coordinator_clock_stops_while_the_brokers_do_not_answer() -> None:
    m = new_member(asyncio.get_running_loop())
    t0 = time.monotonic()
    assert m.without_coordinator(t0 - 10, now=t0) == pytest.approx(10)
    m.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert m.all_down
    assert m.without_coordinator(t0 - 100, now=t0) == 0.0
    m._on_stats('{"brokers": {"b/1": {"state":"DOWN"}}, "cgrp": {"state": "wait-coord"}}')
    assert m.without_coordinator(t0 - 100) == 0.0  # still down
    m._on_stats('{"brokers": {"b/1": {"state":"UP"}}, "cgrp": {"state": "wait-coord"}}')
    assert not m.all_down
    back = m.answered_at
    assert back >= t0
    # Counted from when the brokers answered again, not from the start of the problem.
    assert m.without_coordinator(t0 - 100, now=back + 2) == pytest.approx(2)
    assert m.without_coordinator(back + 1, now=back + 2) == pytest.approx(1)
    # Records flowing end an outage too (a member whose statistics are the user's).
    m.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    m.clear_error()
    assert not m.all_down
    assert m.answered_at >= back
    # A coordinator loading the group (after its restart) answers.
    loading = time.monotonic()
    m._note_commit(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "loading"))
    assert m.answered_at >= loading
    assert m.commit_failing_since is not None
    # A commit waiting: its thread serves nothing, the other members tell (none: 0).
    m.commit_began = time.monotonic() - 30
    assert m.without_coordinator(t0 - 100) == 0.0
    witness = new_member(asyncio.get_running_loop())
    witness.all_down = True
    assert m.without_coordinator(t0 - 100, [m, witness]) == 0.0
    witness._answered()
    now = witness.answered_at + 5
    assert m.without_coordinator(t0 - 100, [m, witness], now=now) == pytest.approx(5)


async def test_a_slow_commit_that_returns_ends_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    m = new_member(asyncio.get_running_loop())
    clock = [1000.0]

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

    class Consumer:
        def __init__(self, waits: float) -> None:
            self.waits = waits

        def commit(self, offsets: Any, asynchronous: bool) -> list[Any]:
            clock[0] += self.waits
            return []

    monkeypatch.setattr(member, "time", Clock)
    m._owned.add(("t", 0))
    positions = [("t", 0, 5, "")]
    m._write(Consumer(1.0), positions)  # type: ignore[arg-type]
    assert m.commit_began is None
    assert m.answered_at == 0.0
    m._write(Consumer(member.COMMIT_SLOW + 1), positions)  # type: ignore[arg-type]
    assert m.commit_began is None
    assert m.answered_at == clock[0]


async def test_a_member_is_not_replaced_while_every_broker_is_down() -> None:
    sub = KafkaSubscription(
        KafkaOptions(coordinator_timeout=1), SubscriptionSpec(group="g", channels=("t",)), None
    )
    replaced: list[str] = []
    sub._replace = lambda old, reason, counted=True: replaced.append(reason)  # type: ignore[method-assign]
    m = new_member(asyncio.get_running_loop(), sub)
    sub._members.append(m)
    m.lost_at = time.monotonic() - 30
    m.all_down = True
    watch = asyncio.create_task(sub._watch())
    try:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:  # three watchdog turns
            assert not replaced
            await asyncio.sleep(0.1)
        m._answered()
        deadline = time.monotonic() + 10
        while not replaced:  # a second after the brokers answered, still without it
            assert time.monotonic() < deadline, "not replaced once the brokers answered"
            await asyncio.sleep(0.05)
        assert time.monotonic() - m.answered_at >= 1.0
        assert "lost its partitions" in replaced[0]
    finally:
        sub._closed = True
        watch.cancel()


# -- the broker restart ----------------------------------------------------------------------


class Flow:
    """Events emitted steadily to one channel and handled by ``_ACTIONS`` actions."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.emitted = 0
        self.handled: dict[str, list[float]] = {}
        self.stop = asyncio.Event()

    def handler(self, action: str) -> Any:
        times = self.handled.setdefault(action, [])

        async def handle(ctx: Context, msg: Message[Any]) -> None:
            times.append(time.monotonic())

        return handle

    async def emit(self, emitter: Emitter) -> None:
        """One event every 20 ms (each one waits for the broker: commits are always in
        flight when the broker goes away); a failed emit is retried."""
        while not self.stop.is_set():
            event = Event(self.channel, f"k{self.emitted % 7}", {"i": self.emitted})
            try:
                await emitter.emit(event)
                self.emitted += 1
            except DriverError as exc:
                log.warning("emit failed during the outage: %s", exc)
            with_pause = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait([with_pause], timeout=0.02)
            with_pause.cancel()

    async def all_handle_after(self, since: float, within: float) -> dict[str, float]:
        """Per action, seconds from ``since`` to its first event handled after it."""
        deadline = time.monotonic() + within
        while True:
            firsts = {
                a: next((t for t in times if t >= since), None) for a, times in self.handled.items()
            }
            if all(t is not None for t in firsts.values()):
                return {a: round(t - since, 1) for a, t in firsts.items() if t is not None}
            if time.monotonic() >= deadline:
                late = sorted(a for a, t in firsts.items() if t is None)
                pytest.fail(f"no event handled by {late} {within:.0f} s after {since:.0f}")
            await asyncio.sleep(0.05)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.disruptive
async def test_every_group_resumes_soon_after_its_broker_restarts(
    rejoin_broker: Service, caplog: pytest.LogCaptureFixture
) -> None:
    tag = uuid.uuid4().hex[:8]
    bootstrap = rejoin_broker.url
    flow = Flow(f"rejoin-{tag}")
    driver = KafkaDriver(bootstrap_servers=bootstrap, partitions=3, delivery_timeout=120)
    receiver_driver = KafkaDriver(
        bootstrap_servers=bootstrap,
        partitions=3,
        coordinator_timeout=_COORDINATOR_TIMEOUT,
        consumer_config={"session.timeout.ms": int(_SESSION * 1000)},
    )
    receiver = Receiver(receiver_driver, name="rejoin", drain_timeout=10)
    for n in range(_ACTIONS):
        action = f"rejoin-act{n}-{tag}"
        receiver.subscribe(flow.channel, action=action, handler=flow.handler(action))
    await driver.provision([flow.channel])
    async with receiver:
        emitting = asyncio.create_task(flow.emit(Emitter(driver)))
        try:
            before = await flow.all_handle_after(time.monotonic(), within=60)
            log.info("handling before the restart: %s", before)
            down_at = time.monotonic()
            await asyncio.to_thread(rejoin_broker.stop)
            unhealthy = None
            while time.monotonic() - down_at < _OUTAGE:  # the outage; health says so
                health = receiver.health()
                if not health["healthy"]:
                    unhealthy = unhealthy or health["reason"]
                await asyncio.sleep(0.2)
            await asyncio.to_thread(rejoin_broker.start, False)
            up_at, up_wall = time.monotonic(), time.time()
            resumed = await flow.all_handle_after(up_at, within=120)
        finally:
            flow.stop.set()
            await emitting
        # Replacements while the broker was down (the defect), and after it answered again
        # (a member whose commit never came back: see the module docstring).
        during, after = [], []
        for r in caplog.records:
            if r.name == consumer.log.name and "replaced by a new consumer" in r.getMessage():
                why = r.getMessage().split(";")[0]
                (during if r.created < up_wall else after).append(why)
        print(
            f"broker down {up_at - down_at:.1f} s; handling resumed after it was back, per "
            f"action: {resumed} s; members replaced while it was down: {len(during)}, after: "
            f"{after}"
        )
        assert unhealthy, "health said healthy throughout the outage"
        wedged = {a for a in resumed if any(f"'{a}'" in why for why in after)}
        slow = {a: s for a, s in resumed.items() if s > _RESUME_BOUND and a not in wedged}
        problems = [f"members replaced while the broker was down: {during}"] if during else []
        if slow:
            problems.append(
                f"handling resumed only {slow} s after the broker was back (a replaced "
                "member's session outlived the restart)"
            )
        assert not problems, "; ".join(problems)
        if wedged:
            warnings.warn(
                f"{sorted(wedged)}: a commit never came back after the restart, the member "
                f"was replaced once the brokers answered (resumed after {resumed} s)",
                stacklevel=1,
            )
        deadline = time.monotonic() + 30
        while not receiver.health()["healthy"]:  # and health is clean again
            assert time.monotonic() < deadline, receiver.health()["reason"]
            await asyncio.sleep(0.2)
    await driver.close()
    await receiver_driver.close()
