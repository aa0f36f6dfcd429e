"""Kafka subscriptions whose topics do not exist (yet, or any more), and a subscribe that
the driver's close overtakes: a pattern that matches no topic yet is a normal state, a
topic deleted while consumed is named by health (no replacement loop), the publish after
a topic's deletion counts as the refusal that makes it again."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver, KafkaSubscriptionOptions
from hexa_event.drivers.kafka import member as member_module
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.errors import ClosedError, DriverError
from hexa_event.testing.waiting import eventually

_FAST_STATS = {"statistics.interval.ms": 300}


def _counting(ticks: list[str]) -> KafkaSubscriptionOptions:
    """Subscription options whose statistics (every 0.3 s) are counted in ``ticks``."""
    return KafkaSubscriptionOptions(consumer_config={**_FAST_STATS, "stats_cb": ticks.append})


async def _ticks_pass(ticks: list[str], count: int) -> None:
    """Wait until librdkafka has given ``count`` more statistics (health rules ran)."""
    target = len(ticks) + count
    await eventually(lambda: len(ticks) >= target, within=30, what=f"{count} statistics")


async def _one(sub: Subscription) -> Delivery:
    """The next record, acked and settled."""
    async with asyncio.timeout(60):
        deliveries: Sequence[Delivery] = []
        while not deliveries:
            deliveries = await sub.fetch(10)
    for d in deliveries:
        d.ack()
    await sub.settle(deliveries)
    return deliveries[0]


_TRANSIENT = ("_DESTROY", "_TRANSPORT", "_ALL_BROKERS_DOWN")


async def _published_again(driver: KafkaDriver, record: RawRecord) -> list[str]:
    """Publish ``record`` until it is stored: the refusals on the way, then ``stored``."""
    outcomes: list[str] = []
    async with asyncio.timeout(90):
        while not outcomes or outcomes[-1] != "stored":
            try:
                await driver.publish([record])
                outcomes.append("stored")
            except DriverError as exc:
                outcomes.append(str(exc))
                assert len(outcomes) < 5, outcomes
    return outcomes


async def test_a_pattern_matching_no_topic_yet_is_ready_and_healthy(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka does not join a group while no topic matches the pattern: subscribe
    waited the whole assignment_timeout, the subscription never counted as joined (never
    ready) and health called it stuck rebalancing 10 s later. Now it is joined and
    healthy at once, and takes the topic's records once the topic is made."""
    monkeypatch.setattr(member_module, "STUCK_AFTER", 2.0)
    tag = uuid.uuid4().hex[:8]
    ticks: list[str] = []
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1, assignment_timeout=90)
    try:
        spec = SubscriptionSpec(group=f"np-{tag}", pattern=f"np-{tag}-.*", options=_counting(ticks))
        sub = await asyncio.wait_for(driver.subscribe(spec), 30)
        assert sub.status().joined
        await _ticks_pass(ticks, 15)  # 4.5 s of statistics, past STUCK_AFTER
        assert sub.status().error == ""
        await driver.publish([RawRecord(f"np-{tag}-a", "k", {}, b"{}")])
        assert (await _one(sub)).record.channel == f"np-{tag}-a"
        assert sub.status().error == ""
    finally:
        await driver.close()


async def test_a_topic_deleted_while_consumed_is_named_and_its_member_kept(
    kafka_bootstrap: str,
) -> None:
    """A topic deleted while its group consumed it: health said the member "lost its
    partitions ... the group's session timed out" (the coordinator was fine), never
    cleared, and the member was replaced every coordinator_timeout. Now health names the
    topic, the member stays, and it takes the records once the topic is made again."""
    tag = uuid.uuid4().hex[:8]
    channel = f"del-{tag}"
    ticks: list[str] = []
    driver = KafkaDriver(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        coordinator_timeout=2,
        producer_config={"topic.metadata.propagation.max.ms": 1000},
    )
    try:
        await driver.publish([RawRecord(channel, "k", {}, b"1")])
        spec = SubscriptionSpec(group=f"dg-{tag}", channels=(channel,), options=_counting(ticks))
        sub = await driver.subscribe(spec)
        assert isinstance(sub, KafkaSubscription)
        assert (await _one(sub)).record.body == b"1"
        (member,) = sub._members
        state = sub._partitions[(channel, 0)]
        await eventually(lambda: state.committed == 1, within=10, what="the commit")
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        await asyncio.wrap_future(admin.delete_topics([channel])[channel])
        await eventually(lambda: channel in sub.status().error, within=30, what="health")
        await _ticks_pass(ticks, 15)  # 4.5 s: past coordinator_timeout
        error = sub.status().error
        assert channel in error, error
        assert "no longer exist" in error, error
        assert sub._members == [member], "replaced"
        await _published_again(driver, RawRecord(channel, "k", {}, b"2"))
        assert (await _one(sub)).record.body == b"2"
        await eventually(lambda: sub.status().error == "", within=30, what="health clean")
        assert sub._members == [member]
    finally:
        await driver.close()


async def test_the_publish_after_a_topics_deletion_is_the_one_refused(
    kafka_bootstrap: str,
) -> None:
    """The first publish to a deleted topic was refused as _UNKNOWN_PARTITION, which did
    not count as a missing topic: the second was refused too, and only the third made
    the topic again. Now the second publish is stored."""
    channel = f"gone2-{uuid.uuid4().hex[:8]}"
    driver = KafkaDriver(
        bootstrap_servers=kafka_bootstrap,
        partitions=1,
        delivery_timeout=10,
        producer_config={"topic.metadata.propagation.max.ms": 1000},
    )
    try:
        record = RawRecord(channel, "k", {}, b"{}")
        await driver.publish([record])
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        await asyncio.wrap_future(admin.delete_topics([channel])[channel])
        await eventually(
            lambda: channel not in admin.list_topics(timeout=5).topics, within=30, what="gone"
        )
        outcomes = await _published_again(driver, record)
        # On a loaded machine librdkafka may first drop the deleted topic's leader handle
        # (_DESTROY, _TRANSPORT): a local, transient refusal, not the broker's answer.
        answers = [o for o in outcomes if not any(t in o for t in _TRANSIENT)]
        assert len(answers) == 2, outcomes
        assert "does not exist" in answers[0], outcomes
    finally:
        await driver.close()


async def test_a_subscribe_overtaken_by_close_ends_at_once() -> None:
    """A driver closed while a subscribe waited for its group: the subscribe went on
    waiting for the whole assignment_timeout before it raised ClosedError."""
    group = f"cz-{uuid.uuid4().hex[:8]}"
    driver = KafkaDriver(bootstrap_servers="127.0.0.1:1", assignment_timeout=120)
    spec = SubscriptionSpec(group=group, pattern="cz-.*")
    task = asyncio.create_task(driver.subscribe(spec))

    def threads() -> list[Any]:
        return [t for t in threading.enumerate() if t.name == f"hexa-kafka-consumer-{group}"]

    await eventually(lambda: bool(threads()), within=10, what="a consumer")
    await driver.close()
    with pytest.raises(ClosedError):
        await asyncio.wait_for(task, 15)
    await eventually(lambda: not threads(), within=10, what="its end")
