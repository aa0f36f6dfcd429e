"""Consume-and-ack throughput on Kafka: a hexa-event receiver against raw confluent-kafka.

A topic (3 partitions, 64 keys) is pre-filled with N events sealed by our envelope. Raw:
``Consumer.consume(500)`` in a loop, msgspec-decode each body into the dataclass, store its
offset (the ack), commit at the end. Ours: a receiver whose handler takes the decoded
dataclass and returns (context extraction, per-key lanes, dedup keys, ack, commit of the
lowest unfinished offset). Both are timed from the first record to the last one handled.

    HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/kafka_consume.py [--count 50000]
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import msgspec
from _harness import cli, compare, finish
from _kafka import BOOTSTRAP, KEYS, new_topic
from confluent_kafka import Consumer, Producer, TopicPartition

import hexa_event as he


@dataclass
class Tick:
    n: int
    name: str
    total: int
    currency: str
    note: str


_topics: dict[int, str] = {}


def fill(count: int) -> str:
    """A fresh topic holding ``count`` events sealed by our envelope (once per count)."""
    if count in _topics:
        return _topics[count]
    topic = new_topic("consume")
    envelope = he.envelope.Envelope()
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "partitioner": "fnv1a_random"}
    )
    ctx = he.Context(correlation_id="bench")
    for n in range(count):
        record = envelope.seal(
            he.Event(topic, f"k{n % KEYS}", Tick(n, "tick", 4200, "EUR", "x")), ctx
        )
        while True:
            try:
                producer.produce(
                    topic, record.body, record.key.encode(), headers=dict(record.headers)
                )
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(60) == 0
    _topics[count] = topic
    return topic


def raw_sync(topic: str, count: int) -> float:
    decoder = msgspec.json.Decoder(Tick)
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    consumer.subscribe([topic])
    seen = 0
    began = None
    while seen < count:
        messages = consumer.consume(500, 1.0)
        ends: dict[tuple[str, int], int] = {}
        for msg in messages:
            if msg.error() is not None:
                continue
            if began is None:
                began = time.perf_counter()
            decoder.decode(msg.value())  # type: ignore[arg-type]
            ends[(msg.topic(), msg.partition())] = msg.offset()  # type: ignore[index, assignment]
            seen += 1
        if ends:  # the ack: store each partition's next offset once per batch
            consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in ends.items()]
            )
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return count / elapsed


async def raw(count: int) -> float:
    topic = await asyncio.to_thread(fill, count)
    return await asyncio.to_thread(raw_sync, topic, count)


async def ours(count: int) -> float:
    topic = await asyncio.to_thread(fill, count)
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    receiver = driver.receiver("bench", concurrency=256)
    done = asyncio.Event()
    seen = 0
    began = 0.0

    @receiver.subscribe(topic, action=f"bench-{uuid.uuid4().hex[:8]}", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen, began
        if seen == 0:
            began = time.perf_counter()
        seen += 1
        if seen == count:
            done.set()

    async with receiver:
        await done.wait()
        elapsed = time.perf_counter() - began
    await driver.close()
    return count / elapsed


async def driver_only(count: int) -> float:
    """The driver alone: fetch and ack deliveries, decode bodies (where does the time go?)."""
    topic = await asyncio.to_thread(fill, count)
    decoder = msgspec.json.Decoder(Tick)
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    sub = await driver.subscribe(
        he.driver.SubscriptionSpec(group=f"drv-{uuid.uuid4().hex[:8]}", channels=(topic,))
    )
    seen = 0
    began = None
    while seen < count:
        deliveries = await sub.fetch(256)
        if began is None:
            began = time.perf_counter()
        for delivery in deliveries:
            decoder.decode(delivery.record.body)
            delivery.ack()
        await sub.settle(deliveries)
        seen += len(deliveries)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    await sub.close()
    await driver.close()
    return count / elapsed


async def main() -> None:
    args = cli(__doc__.splitlines()[0], 50_000)
    result = await compare(
        "Kafka consume + ack",
        args.count,
        ("raw confluent-kafka consume+decode+store", raw),
        ("hexa-event receiver", ours),
        rounds=args.rounds,
    )
    breakdown = await compare(
        "Kafka consume + ack, driver only (fetch, decode, ack)",
        args.count,
        ("raw confluent-kafka consume+decode+store", raw),
        ("KafkaSubscription fetch/ack", driver_only),
        rounds=args.rounds,
    )
    finish([result, breakdown], args.json)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
