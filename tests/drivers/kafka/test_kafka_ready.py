"""Issue 23, two Kafka details: ``/readyz`` waits until the members have joined their groups
(the first assignment arrived), and topic lookups ask the cluster for the wanted topics only
(never a listing of every topic, never creating one as a side effect)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicCollection, TopicPartition

import hexa_event as he
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.drivers.kafka.member import Member
from hexa_event.runner import Service
from hexa_event.testing import Collector, eventually

pytestmark = pytest.mark.kafka


async def test_readiness_waits_for_the_first_assignment(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:10]
    channel, action = f"krd-{tag}", f"krda-{tag}"
    held, entered = threading.Event(), threading.Event()
    original = Member._on_assign

    def hold(self: Member, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        entered.set()
        held.wait(30)  # the group's assignment settles late (a slow rebalance)
        original(self, consumer, partitions)

    monkeypatch.setattr(Member, "_on_assign", hold)
    # subscribe does not wait for the assignment: the receiver starts before it arrives.
    conn = he.connect(f"kafka://{kafka_bootstrap}", assignment_timeout=0)
    await conn.provision([channel])
    got = Collector()
    receiver = conn.receiver("ready")
    receiver.subscribe(channel, action=action, handler=got.add_message)
    service = Service([receiver])
    seen: dict[str, Any] = {}

    async def drive() -> None:
        await eventually(lambda: service.started, within=60, what="service started")
        assert await asyncio.to_thread(entered.wait, 30), "no assignment began"
        ready, seen["before"] = service.readiness()
        assert not ready, seen["before"]
        held.set()
        await eventually(lambda: service.readiness()[0], within=30, what="ready once assigned")
        await conn.emitter().emit(he.Event(channel, "k", {"n": 1}))
        await got.wait_for(1, within=30)
        service.stop()

    try:
        await asyncio.gather(he.serve(service, handle_signals=False), drive())
    finally:
        held.set()
        await conn.close()
    assert f"ready/{action}: joining its consumer group" in seen["before"]["reason"]


class _Recording:
    """The driver's admin client, recording the metadata requests it makes."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin
        self.requests: list[list[str] | None] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        self.requests.append(None if topic is None else [topic])
        return self.admin.list_topics(topic=topic, timeout=timeout)

    def describe_topics(self, topics: TopicCollection, **kwargs: Any) -> Any:
        self.requests.append(list(topics.topic_names))
        return self.admin.describe_topics(topics, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.admin, name)


async def test_topic_lookups_ask_for_the_wanted_topics_only(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    present, missing = f"ktp-{tag}", f"ktp-missing-{tag}"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=2)
    try:
        await driver.provision([present])
        recording = _Recording(driver._admin_client())
        driver._admin = recording  # type: ignore[assignment]
        found = await driver.topic_partitions([present, missing, present])
        assert found == {present: 2}
        # One request naming each wanted topic once: never a listing of every topic, nor a
        # round trip per topic (a receiver starts with its topic, retry and dead-letter
        # topics: five lookups in a row cost a start 10-40 ms).
        assert recording.requests == [[present, missing]]
        # Asking about a missing topic did not create it (a broker with
        # auto.create.topics.enable would, for a client that allows it).
        listing = await asyncio.to_thread(recording.admin.list_topics, timeout=10)
        assert missing not in listing.topics
    finally:
        await driver.close()
