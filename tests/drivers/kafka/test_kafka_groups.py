"""Eager assignment strategies and fatal consumer errors (issue 10), on the real broker."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer

import hexa_event as he
from hexa_event.driver import RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver, KafkaSubscriptionOptions
from hexa_event.drivers.kafka.member import Member
from hexa_event.errors import ConfigurationError, DriverError, ReceiverFailedError
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"kgr-{tag}", f"kgrg-{tag}"


def test_assignment_option_is_typed_and_checked() -> None:
    with pytest.raises(ConfigurationError, match="range"):
        KafkaSubscriptionOptions(assignment="sticky")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="assignment"):
        KafkaSubscriptionOptions(consumer_config={"partition.assignment.strategy": "range"})
    eager = KafkaSubscriptionOptions(assignment="range")
    assert eager.separate_retry_group is False  # one group per action, as Go has
    assert KafkaSubscriptionOptions().separate_retry_group is True
    options = KafkaDriver().options
    config = options.consumer("g", "earliest", eager)
    assert config["partition.assignment.strategy"] == "range"
    with pytest.raises(ConfigurationError, match=r"group\.protocol"):
        KafkaDriver(consumer_config={"group.protocol": "consumer"}).options.consumer(
            "g", "earliest", eager
        )


@pytest.mark.parametrize("assignment", ["range", "roundrobin"])
async def test_eager_members_hand_over_without_duplicates(
    kafka_bootstrap: str, assignment: Any
) -> None:
    """A second eager member joins mid-stream: everything is revoked, in-flight work
    finishes and is committed before the new assignment; nothing is handled twice."""
    channel, group = _names()
    total = 1200
    options = KafkaSubscriptionOptions(assignment=assignment)
    spec = SubscriptionSpec(group=group, channels=(channel,), prefetch=32, options=options)
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=6)
    other = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=6)
    handled: Counter[str] = Counter()
    by_member: dict[str, int] = Counter()
    stop = asyncio.Event()
    seconds: list[Subscription] = []

    async def member(name: str, sub: Subscription) -> None:
        while not stop.is_set():
            batch = await sub.fetch(50)
            if not batch:
                return
            for d in batch:
                handled[d.coordinates] += 1
                by_member[name] += 1
                # Some work: an eager join takes a heartbeat (3 s). Until the second member
                # holds partitions, slower still, so the first cannot drain the channel
                # before the hand-over under test (it did once in CI, under load).
                joined = any(s.status().assignment for s in seconds)
                await asyncio.sleep(0.005 if joined else 0.02)
                d.ack()
            await sub.settle(batch)

    try:
        await driver.publish([RawRecord(channel, f"k{i}", {}, b"x") for i in range(total)])
        first = await driver.subscribe(spec)
        task_a = asyncio.create_task(member("first", first))
        await eventually(lambda: len(handled) >= 100, within=30, what="first events")
        second = await other.subscribe(spec)
        seconds.append(second)
        task_b = asyncio.create_task(member("second", second))
        await eventually(lambda: len(handled) >= total, within=90, what="all events")
        stop.set()
        await first.close()
        await second.close()
        await asyncio.gather(task_a, task_b, return_exceptions=True)
        assert sum(handled.values()) == total, [c for c, n in handled.items() if n > 1][:5]
        assert by_member["second"] > 0
    finally:
        await driver.close()
        await other.close()


def _eager_squatter(bootstrap: str, group: str, topic: str, ready: threading.Event) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": 10000,
        }
    )
    consumer.subscribe([topic], on_assign=lambda c, p: ready.set())
    return consumer


async def test_inconsistent_group_protocol_stops_the_member_with_advice(
    kafka_bootstrap: str,
) -> None:
    """An eager (Go-like) member holds the group: ours cannot join; fetch raises a
    non-retriable DriverError naming the fix, status() shows it; never a silent stall."""
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1, assignment_timeout=3)
    ready = threading.Event()
    stop = threading.Event()
    try:
        await driver.provision([channel])
        squatter = _eager_squatter(kafka_bootstrap, group, channel, ready)

        def keep_polling() -> None:
            while not stop.is_set():
                squatter.poll(0.1)
            squatter.close()

        poller = threading.Thread(target=keep_polling, daemon=True)
        poller.start()
        assert await asyncio.to_thread(ready.wait, 30), "the eager member never joined"
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        with pytest.raises(DriverError) as caught:
            async with asyncio.timeout(30):
                await sub.fetch(10)
        assert caught.value.retriable is False
        assert "INCONSISTENT_GROUP_PROTOCOL" in str(caught.value)
        assert "assignment=" in str(caught.value)
        assert "INCONSISTENT_GROUP_PROTOCOL" in sub.status().error
        await sub.close()
    finally:
        stop.set()
        await driver.close()


async def test_a_dead_consumer_thread_fails_the_receiver(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer thread keeps dying: each death is logged and the member replaced; the
    fourth within 10 minutes is not transient: health unhealthy with the reason, run()
    raises (a single death is replaced: test_kafka_watchdog.py)."""
    channel, action = _names()
    conn = he.connect(f"kafka://{kafka_bootstrap}", partitions=1)
    receiver = conn.receiver("groups")
    receiver.subscribe(channel, action=action, handler=lambda c, m: None)
    original = Member._measure_lag
    armed = threading.Event()

    def explode(self: Member, consumer: Consumer) -> None:
        if armed.is_set():
            raise RuntimeError("boom in the consumer thread")
        original(self, consumer)

    monkeypatch.setattr(Member, "_measure_lag", explode)
    try:
        running = asyncio.create_task(receiver.run())
        await eventually(lambda: receiver.health()["state"] == "running", within=30)
        armed.set()
        with pytest.raises(ReceiverFailedError, match="consumer thread failed"):
            # Three replacements first, each joining the group while the last one leaves.
            async with asyncio.timeout(120):
                await running
        health = receiver.health()
        assert not health["healthy"]
        assert "consumer thread failed" in str(health)
        assert "was replaced 3 times" in str(health)
    finally:
        await receiver.close()
        await conn.close()
