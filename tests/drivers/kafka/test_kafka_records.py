"""The Kafka driver's record batches (``fetch_records``/``settle_records``) on the real
broker: settled as offset ranges, never committed past a record taken out and unsettled,
given back in order on a nack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from hexa_event.driver import RawRecord, RecordBatch, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.producer import Pending
from hexa_event.errors import AlreadySettledError, NotStoredError, PartialPublishError
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
    return [int(h["seq"]) for b in batches for h in b.headers]


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


class _Report:
    """A delivery report's message, as confluent-kafka hands it to the callback."""

    def __init__(self, record: RawRecord) -> None:
        self._record = record

    def topic(self) -> str:
        return self._record.channel

    def key(self) -> bytes:
        return self._record.key.encode()

    def value(self) -> bytes:
        return self._record.body

    def headers(self) -> list[tuple[str, bytes]]:
        return list(self._record.headers.items())


async def test_failed_delivery_reports_are_matched_to_their_records() -> None:
    """One callback for a publish call: successes only count, each failure names its own
    record's index (identical records are interchangeable)."""
    records = [
        RawRecord("t", "a", {"h": b"1"}, b"x"),
        RawRecord("t", "b", {"h": b"2"}, b"y"),
        RawRecord("t", "a", {"h": b"3"}, b"x"),
        RawRecord("t", "a", {"h": b"1"}, b"x"),
    ]
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    pending = Pending(future, records)
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    for index, err in ((1, None), (2, too_large), (0, None)):
        pending.on_delivery(err, _Report(records[index]))
    assert not pending.reported()
    pending.on_delivery(too_large, _Report(records[3]))  # the same as record 0
    assert pending.reported()
    pending.finish(str)
    with pytest.raises(PartialPublishError) as caught:
        await future
    assert set(caught.value.failed) == {0, 2}
    assert caught.value.stored == frozenset({1, 3})
    assert all(isinstance(e, NotStoredError) for e in caught.value.failed.values())
