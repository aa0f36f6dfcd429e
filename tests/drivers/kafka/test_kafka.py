"""Kafka-specific guarantees beyond the conformance suite, on the real broker."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

import hexa_event
from hexa_event.context import Context
from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver, KafkaSubscriptionOptions, sarama_partition
from hexa_event.emitter import Emitter
from hexa_event.errors import ChannelNotFoundError, PermanentError
from hexa_event.event import Event, Message
from hexa_event.replay import replay_dead_letters
from hexa_event.testing.waiting import Collector, eventually

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"kt-{tag}", f"kg-{tag}"


def _records(channel: str, n: int, key: str | None = None) -> list[RawRecord]:
    return [
        RawRecord(channel, key or f"k{i}", {"seq": str(i).encode()}, f"body-{i}".encode())
        for i in range(n)
    ]


async def _fetch_n(sub: Subscription, n: int, within: float = 30.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.extend(await sub.fetch(n - len(got)))
    return got


def _committed(bootstrap: str, group: str, topic: str, partitions: Sequence[int]) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        consumer.close()


async def test_emit_to_missing_topic_without_provisioning_says_so(kafka_bootstrap: str) -> None:
    channel, _ = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, provision=False)
    try:
        with pytest.raises(ChannelNotFoundError, match="does not exist"):
            await Emitter(driver).emit(Event(channel, "k", {"a": 1}))
    finally:
        await driver.close()


async def test_emit_returns_after_ack_and_keys_land_on_sarama_partitions(
    kafka_bootstrap: str,
) -> None:
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=7)
    keys = [f"key-{i}" for i in range(60)] + ["order-42", "ĉĝĥ"]
    try:
        ids = await Emitter(driver).emit_many(Event(channel, k, {"k": k}) for k in keys)
        assert len(set(ids)) == len(keys)
    finally:
        await driver.close()
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([channel])
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 30
    try:
        while len(seen) < len(keys):
            assert time.monotonic() < deadline, f"only {len(seen)} records read back"
            for msg in consumer.consume(100, 0.5):
                raw_key, partition = msg.key(), msg.partition()
                if msg.error() is None and raw_key is not None and partition is not None:
                    seen[raw_key.decode()] = partition
    finally:
        consumer.close()
    for key in keys:
        assert seen[key] == sarama_partition(key, 7), key


async def test_commit_is_the_lowest_unfinished_offset(kafka_bootstrap: str) -> None:
    """Acks out of order never commit past an unsettled record."""
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.publish(_records(channel, 10, key="same"))
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        deliveries = await _fetch_n(sub, 10)
        assert [d.coordinates for d in deliveries] == [f"{channel}-0-{i}" for i in range(10)]
        for d in deliveries:
            if d.coordinates != f"{channel}-0-3":
                d.ack()
        await sub.settle([d for d in deliveries if d.outcome is not None])
        # settle commits (in the background, within milliseconds), before any close.
        await eventually(
            lambda: _committed(kafka_bootstrap, group, channel, [0]) == [3],
            within=10,
            what="the commit of the settled prefix",
        )
        await sub.close()
        committed = await asyncio.to_thread(_committed, kafka_bootstrap, group, channel, [0])
        assert committed == [3]
        again = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        # Only the unsettled record comes again: the acks above it travel in the metadata.
        (redelivered,) = await _fetch_n(again, 1)
        assert redelivered.coordinates == f"{channel}-0-3"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await again.fetch(10)
        redelivered.ack()
        await again.settle([redelivered])
        await eventually(
            lambda: _committed(kafka_bootstrap, group, channel, [0]) == [10],
            within=10,
            what="the commit of everything",
        )
        await again.close()
    finally:
        await driver.close()


async def test_nack_delivers_again_after_the_delay(kafka_bootstrap: str) -> None:
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.publish(_records(channel, 2))
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        first, second = await _fetch_n(sub, 2)
        second.ack()
        started = time.monotonic()
        first.nack(0.3)
        await sub.settle([first, second])
        (again,) = await _fetch_n(sub, 1)
        assert time.monotonic() - started >= 0.25
        assert again.coordinates == first.coordinates
        assert again.delivery_count == 2
        again.ack()
        await sub.settle([again])
        await sub.close()
        committed = await asyncio.to_thread(_committed, kafka_bootstrap, group, channel, [0])
        assert committed == [2]
    finally:
        await driver.close()


async def test_prefetch_bounds_unsettled_deliveries(kafka_bootstrap: str) -> None:
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    try:
        await driver.publish(_records(channel, 50))
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,), prefetch=8))
        held = await _fetch_n(sub, 8)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await sub.fetch(10)
        held[0].ack()
        await sub.settle(held[:1])
        more = await _fetch_n(sub, 1)
        assert len(more) == 1
        await sub.close()
    finally:
        await driver.close()


async def test_rebalance_hands_over_without_duplicates(kafka_bootstrap: str) -> None:
    """A second member joins mid-stream: revoked partitions finish, commit, move; no event
    is processed twice."""
    channel, group = _names()
    total = 1200
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=6)
    handled: list[str] = []
    stop = asyncio.Event()

    async def member(sub: Subscription) -> None:
        while not stop.is_set():
            batch = await sub.fetch(50)
            for d in batch:
                handled.append(d.coordinates)
                await asyncio.sleep(0)
                d.ack()
            await sub.settle(batch)

    try:
        await driver.publish(_records(channel, total))
        first = await driver.subscribe(
            SubscriptionSpec(group=group, channels=(channel,), prefetch=32)
        )
        task_a = asyncio.create_task(member(first))
        await eventually(lambda: len(handled) >= 100, within=30, what="first events")
        second_driver = KafkaDriver(bootstrap_servers=kafka_bootstrap)
        second = await second_driver.subscribe(
            SubscriptionSpec(group=group, channels=(channel,), prefetch=32)
        )
        task_b = asyncio.create_task(member(second))
        await eventually(lambda: len(set(handled)) >= total, within=60, what="all events")
        stop.set()
        await first.close()
        await second.close()
        await asyncio.gather(task_a, task_b, return_exceptions=True)
        await second_driver.close()
        assert len(handled) == len(set(handled)) == total
    finally:
        await driver.close()


async def test_unreachable_broker_is_reported_without_busy_looping() -> None:
    driver = KafkaDriver(bootstrap_servers="127.0.0.1:1", assignment_timeout=1.0)
    try:
        started_cpu = resource.getrusage(resource.RUSAGE_SELF)
        sub = await driver.subscribe(SubscriptionSpec(group="g", pattern="nothing-.*"))
        await eventually(lambda: sub.status().error != "", within=10, what="an error report")
        error = sub.status().error.lower()
        assert "refused" in error or "down" in error
        wall = time.monotonic()
        await asyncio.sleep(1.0)  # measuring idle CPU over a fixed window, not waiting
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (used.ru_utime + used.ru_stime) - (started_cpu.ru_utime + started_cpu.ru_stime)
        assert cpu < 0.8 * (time.monotonic() - wall + 1.0), f"busy loop: {cpu:.2f}s CPU"
        await sub.close()
    finally:
        await driver.close()


async def test_group_override_and_dead_letter_replay(kafka_bootstrap: str) -> None:
    channel, action = _names()
    group = f"{action}-custom"
    driver = hexa_event.connect(f"kafka://{kafka_bootstrap}", partitions=2)
    assert isinstance(driver.driver, KafkaDriver)
    fail = True
    handled = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe(
        channel, action=action, options=KafkaSubscriptionOptions(group=group), payload=dict
    )
    async def handle(ctx: Context, msg: Message[dict[str, Any]]) -> None:
        if fail:
            raise PermanentError("not today")
        handled.add(msg.id)

    try:
        emitter = driver.emitter()
        ids = await emitter.emit_many(Event(channel, f"k{i}", {"i": i}) for i in range(3))
        async with receiver:
            dlq = await driver.subscribe(
                SubscriptionSpec(group=f"{action}-reader", channels=(f"{action}.dlq",))
            )
            letters = await _fetch_n(dlq, 3)
            for d in letters:
                assert d.record.headers["HEXA_ERROR_MESSAGE"] == b"not today"
                assert d.record.headers["HEXA_SOURCE_CHANNEL"] == channel.encode()
                d.ack()
            await dlq.settle(letters)
            await dlq.close()
            # The override group, not the action, holds the offsets (auto-committed each 1 s).
            deadline = time.monotonic() + 20
            while True:
                committed = await asyncio.to_thread(
                    _committed, kafka_bootstrap, group, channel, [0, 1]
                )
                if sum(max(0, c) for c in committed) == 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert sum(max(0, c) for c in committed) == 3
            fail = False
            result = await replay_dead_letters(driver, action)
            assert result.replayed == 3
            assert set(await handled.wait_for(3, within=30)) == set(ids)
        again = await replay_dead_letters(driver, action, idle_timeout=5)
        assert again.replayed == 0
    finally:
        await driver.close()


async def test_replay_cli(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    from hexa_event.cli import main

    channel, action = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        letter = RawRecord(
            f"{action}.dlq",
            "k",
            {"HEXA_SOURCE_CHANNEL": channel.encode(), "HEXA_ERROR_TYPE": b"ValueError"},
            b"{}",
        )
        await driver.publish([letter])
        code = await asyncio.to_thread(
            main, ["dlq", "replay", "--url", f"kafka://{kafka_bootstrap}", "--action", action]
        )
        assert code == 0
        assert "replayed 1 dead letters" in capsys.readouterr().out
        sub = await driver.subscribe(SubscriptionSpec(group=f"{action}-check", channels=(channel,)))
        (back,) = await _fetch_n(sub, 1)
        assert "HEXA_ERROR_TYPE" not in back.record.headers
        assert back.record.headers["HEXA_REPLAYED_FROM"] == f"{action}.dlq-0-0".encode()
        await sub.close()
    finally:
        await driver.close()


async def test_revoke_waits_for_in_flight_work_and_commits_it(kafka_bootstrap: str) -> None:
    """A revoked partition's unsettled deliveries may finish; what finished is committed, so
    the new owner starts after it (nothing processed twice)."""
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2, revoke_timeout=30)
    other = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    try:
        await driver.publish(_records(channel, 20))
        first: Any = await driver.subscribe(
            SubscriptionSpec(group=group, channels=(channel,), prefetch=100)
        )
        held = await _fetch_n(first, 20)
        joining = asyncio.create_task(
            other.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        )
        await eventually(
            lambda: any(s.revoking for s in first._partitions.values()),
            within=30,
            what="a revoke on the first member",
        )
        # The rebalance waits for the in-flight work: the partition has not moved yet.
        second: Any = await asyncio.wait_for(joining, 30)
        assert second.status().assignment == ()
        for d in held:
            d.ack()
        await first.settle(held)
        await eventually(lambda: len(second.status().assignment) == 1, within=30, what="assignment")
        (partition,) = second.status().assignment
        moved = int(partition.rsplit("-", 1)[1])
        assert partition == f"{channel}-{moved}"
        before = sum(1 for d in held if d.coordinates.startswith(f"{channel}-{moved}-"))
        await driver.publish(_records(channel, 20))
        (fresh, *_rest) = await _fetch_n(second, 1)
        # The new owner starts exactly after what the old one finished.
        assert fresh.coordinates == f"{channel}-{moved}-{before}"
        await first.close()
        await second.close()
    finally:
        await driver.close()
        await other.close()


async def test_many_emits_in_flight(kafka_bootstrap: str) -> None:
    """The relay's path: thousands of concurrent emits, each returning after its ack."""
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    try:
        emitter = Emitter(driver)
        ids = await asyncio.gather(
            *(emitter.emit(Event(channel, f"k{i % 50}", {"i": i})) for i in range(3000))
        )
        assert len(set(ids)) == 3000
        sub = await driver.subscribe(
            SubscriptionSpec(group=group, channels=(channel,), prefetch=5000)
        )
        got = await _fetch_n(sub, 3000)
        assert {d.record.headers["HEXA_EVENT_ID"].decode() for d in got} == set(ids)
        await sub.close()
    finally:
        await driver.close()
