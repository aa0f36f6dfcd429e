"""A subscription's start to its first record (issue 22): what the join no longer waits for."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.drivers.kafka import driver as driver_module
from hexa_event.drivers.kafka import member as member_module
from hexa_event.testing import eventually


class _Counted(Consumer):  # type: ignore[misc]
    """confluent-kafka's consumer, noting the group and thread of each one made and which
    were closed."""

    made: list[tuple[str, str, _Counted]] = []
    closed: list[_Counted] = []

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        _Counted.made.append((config["group.id"], threading.current_thread().name, self))

    def close(self, *args: Any, **kwargs: Any) -> Any:
        _Counted.closed.append(self)
        return super().close(*args, **kwargs)


async def _fetch_n(sub: Subscription, n: int, within: float = 30.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.extend(await sub.fetch(n - len(got)))
    return got


async def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """Commit ``offset`` of ``topic`` partition 0 for ``group``, as an earlier member did."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        await asyncio.to_thread(
            consumer.commit, offsets=[TopicPartition(topic, 0, offset)], asynchronous=False
        )
    finally:
        consumer.close()


async def test_the_retry_group_reads_the_action_groups_offsets_with_a_reader_made_at_start(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry group's first assignment starts where the action's group left off, read
    through a consumer made when the subscription started (on a thread of its own, it finds
    the coordinator while the group is joined), not one made inside the assignment
    callback, which held the assignment, and so the start, for a connection's time."""
    tag = uuid.uuid4().hex[:10]
    channel, group = f"kst-{tag}", f"kstg-{tag}"
    retry = f"{group}.retry.1"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.publish([RawRecord(retry, "k", {}, str(i).encode()) for i in range(5)])
        await driver.provision([channel])
        await _commit(kafka_bootstrap, group, retry, 3)
        _Counted.made, _Counted.closed = [], []
        monkeypatch.setattr(member_module, "Consumer", _Counted)
        spec = SubscriptionSpec(group=group, channels=(channel, retry), retry_channels=(retry,))
        sub = await driver.subscribe(spec)
        try:
            got = await _fetch_n(sub, 2)
            assert [d.coordinates for d in got] == [f"{retry}-0-3", f"{retry}-0-4"]
            made = [(g, thread) for g, thread, _ in _Counted.made]
            # None was made by a consumer thread (the assignment callbacks run there).
            assert all(not thread.startswith("hexa-kafka-consumer-") for _, thread in made), made
            # The action's group, the retry group, and the reader of the action's group.
            assert sorted(g for g, _ in made) == sorted([group, f"{group}.retry", group])
            (reader,) = [c for g, t, c in _Counted.made if t.startswith("hexa-kafka-offsets-")]
            await eventually(lambda: reader in _Counted.closed, within=30, what="reader closed")
            for d in got:
                d.ack()
            await sub.settle(got)
        finally:
            await sub.close()
    finally:
        await driver.close()


async def test_a_reader_made_at_start_is_closed_when_its_group_has_offsets(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry group with offsets of its own never needs the reader: it is closed with
    the first assignment, not kept for the member's life."""
    tag = uuid.uuid4().hex[:10]
    channel, group = f"kst-{tag}", f"kstg-{tag}"
    retry = f"{group}.retry.1"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.provision([channel, retry])
        await _commit(kafka_bootstrap, f"{group}.retry", retry, 0)
        _Counted.made, _Counted.closed = [], []
        monkeypatch.setattr(member_module, "Consumer", _Counted)
        spec = SubscriptionSpec(group=group, channels=(channel, retry), retry_channels=(retry,))
        sub = await driver.subscribe(spec)
        try:
            assert sub.status().joined
            readers = [c for _, t, c in _Counted.made if t.startswith("hexa-kafka-offsets-")]
            assert len(readers) == 1
            await eventually(lambda: readers[0] in _Counted.closed, within=30, what="closed")
        finally:
            await sub.close()
    finally:
        await driver.close()


async def test_created_topics_are_looked_up_again_within_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Topics just created show in metadata a few milliseconds later: the lookup is made
    again after 5 ms (the pause doubling up to 100 ms), not after a fixed 100 ms that 4
    starts in 10 paid in full."""
    driver = KafkaDriver(bootstrap_servers="127.0.0.1:9092")
    answers = [{}, {}, {}, {"t": 3}]
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def lookup(topics: list[str]) -> dict[str, int]:
        return answers.pop(0)

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(driver, "topic_partitions", lookup)
    monkeypatch.setattr(driver_module.asyncio, "sleep", pause)
    try:
        await driver._wait_visible(["t"])
    finally:
        monkeypatch.undo()
        await driver.close()
    assert pauses == [0.005, 0.01, 0.02]
