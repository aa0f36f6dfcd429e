"""The Kafka driver's record batches (``fetch_records``/``settle_records``) on the real
broker: settled as offset ranges, never committed past a record taken out and unsettled,
given back in order on a nack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, TopicPartition

from hexa_event.driver import PairHeaders, RawRecord, RecordBatch, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.errors import AlreadySettledError
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        consumer.close()


async def _fetch(sub: KafkaSubscription, n: int) -> list[RecordBatch]:
    batches: list[RecordBatch] = []
    async with asyncio.timeout(30):
        while sum(map(len, batches)) < n:
            batch = await sub.fetch_records(n - sum(map(len, batches)))
            assert batch is not None
            batches.append(batch)
    return batches


def _seqs(batches: Sequence[RecordBatch]) -> list[int]:
    return [int(PairHeaders(h)["seq"]) for b in batches for h in b.headers]


async def test_record_batches_settle_as_ranges_never_past_a_taken_record(
    kafka_bootstrap: str,
) -> None:
    tag = uuid.uuid4().hex[:10]
    topic, group = f"kr-{tag}", f"kr-{tag}"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.publish(
            [RawRecord(topic, "k", {"seq": str(i).encode()}, b"x") for i in range(20)]
        )
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(topic,)))
        assert isinstance(sub, KafkaSubscription)
        batches = await _fetch(sub, 20)
        assert _seqs(batches) == list(range(20))
        assert batches[0].keys[0] == "k"
        assert batches[0].channels[0] == topic
        assert batches[0].timestamp(0) is not None
        first = batches[0]
        index = min(5, len(first) - 1)
        taken = first.take(index)
        assert taken.record.headers["seq"] == str(index).encode()
        assert taken.coordinates == f"{topic}-0-{index}"
        with pytest.raises(IndexError):
            first.take(index)
        for batch in batches:
            batch.ack()
        await sub.settle_records(batches)
        await sub.settle_records(batches)  # applied once
        with pytest.raises(AlreadySettledError):
            first.ack()
        await eventually(
            lambda: _committed(kafka_bootstrap, group, topic) == index,
            within=20,
            what="the commit stops at the record taken out",
        )
        taken.ack()
        await sub.settle([taken])
        await eventually(
            lambda: _committed(kafka_bootstrap, group, topic) == 20,
            within=20,
            what="the commit past everything once it is acked",
        )

        # A nacked batch comes back at once, first in line and in order, counted again.
        await driver.publish(
            [RawRecord(topic, "k", {"seq": str(i).encode()}, b"x") for i in range(20, 24)]
        )
        again = await _fetch(sub, 4)
        assert _seqs(again) == [20, 21, 22, 23]
        for batch in again:
            batch.nack()
        await sub.settle_records(again)
        back = await _fetch(sub, 4)
        assert _seqs(back) == [20, 21, 22, 23]
        assert back[0].take(0).delivery_count == 2
        await sub.close()
    finally:
        await driver.close()
