"""Raw Kafka clients on this machine: confluent-kafka (librdkafka) vs aiokafka.

Both produce small events (~80-byte JSON values, 64 keys) idempotently with acks=all and
5 ms linger, then consume them back with a fresh group and commit. No hexa-event code runs
here; this is what chose the client the Kafka driver is built on.

    HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/kafka_client_compare.py \
        [--count 50000] [--rounds 3]

Recorded 2026-11-27 on the project machine (x86_64, 2 cores shared with the broker and other
work, Python 3.11.7, Kafka 4.1.1 KRaft, 3 partitions, 50,000 events, medians of 3 rounds):

    produce (idempotent, acks=all)  confluent-kafka 2.16.1  58,973 / 61,290 ev/s
                                    aiokafka 0.14.0         29,132 / 17,947 ev/s  (0.49 / 0.29)
    consume + commit                confluent-kafka 2.16.1 684,417 / 451,068 ev/s
                                    aiokafka 0.14.0        364,083 / 234,025 ev/s (0.53 / 0.52)

So the driver is built on confluent-kafka: about twice the throughput both ways here, plus
what our goals need and aiokafka lacks: cooperative-sticky (incremental) rebalancing and an
``on_lost`` hook, a delivery timeout in idempotent mode, sarama's partitioner
(``fnv1a_random``) for Go interop, and one config dict for TLS/SASL.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from _harness import cli, compare, finish
from _kafka import BOOTSTRAP, VALUE, key, new_topic
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

_filled: dict[str, str] = {}


def confluent_produce_sync(topic: str, count: int) -> float:
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    failures = 0

    def report(err: object, _msg: object) -> None:
        nonlocal failures
        if err is not None:
            failures += 1

    began = time.perf_counter()
    for n in range(count):
        while True:
            try:
                producer.produce(topic, VALUE, key(n), on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        if n % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - began
    assert left == 0 and failures == 0
    return count / elapsed


async def confluent_produce(count: int) -> float:
    topic = new_topic("cc-produce")
    _filled["confluent"] = topic
    return await asyncio.to_thread(confluent_produce_sync, topic, count)


async def aiokafka_produce(count: int) -> float:
    topic = new_topic("ak-produce")
    _filled["aiokafka"] = topic
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        began = time.perf_counter()
        futures = []
        for n in range(count):
            futures.append(await producer.send(topic, VALUE, key=key(n)))
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - began
    finally:
        await producer.stop()
    return count / elapsed


def confluent_consume_sync(topic: str, count: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": f"cc-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    began = None
    while seen < count:
        for msg in consumer.consume(500, 1.0):
            if msg.error() is None:
                if began is None:
                    began = time.perf_counter()
                seen += 1
    consumer.commit(asynchronous=False)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    consumer.close()
    return count / elapsed


async def confluent_consume(count: int) -> float:
    return await asyncio.to_thread(confluent_consume_sync, _filled["confluent"], count)


async def aiokafka_consume(count: int) -> float:
    consumer = AIOKafkaConsumer(
        _filled["aiokafka"],
        bootstrap_servers=BOOTSTRAP,
        group_id=f"ak-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        began = None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for records in batches.values():
                if records and began is None:
                    began = time.perf_counter()
                seen += len(records)
        await consumer.commit()
        elapsed = time.perf_counter() - (began or time.perf_counter())
    finally:
        await consumer.stop()
    return count / elapsed


async def main() -> None:
    args = cli(__doc__.splitlines()[0], 50_000)
    import aiokafka
    import confluent_kafka

    rates: dict[str, list[float]] = {"cp": [], "ap": [], "cc": [], "ac": []}
    # Each consume round reads the topic its produce round just filled.
    for _ in range(args.rounds):
        rates["cp"].append(await confluent_produce(args.count))
        rates["ap"].append(await aiokafka_produce(args.count))
        rates["cc"].append(await confluent_consume(args.count))
        rates["ac"].append(await aiokafka_consume(args.count))

    def replay(name: str) -> Callable[[int], Awaitable[float]]:
        values = iter(rates[name])

        async def rate(_: int) -> float:
            return next(values)

        return rate

    confluent = f"confluent-kafka {confluent_kafka.__version__}"
    other = f"aiokafka {aiokafka.__version__}"
    print("(the 'ratio' lines below read: aiokafka / confluent-kafka)")
    out = [
        await compare(
            "raw produce (idempotent, acks=all)",
            args.count,
            (confluent, replay("cp")),
            (other, replay("ap")),
            rounds=args.rounds,
        ),
        await compare(
            "raw consume + commit",
            args.count,
            (confluent, replay("cc")),
            (other, replay("ac")),
            rounds=args.rounds,
        ),
    ]
    for result in out:
        result["group"] = "clients"
    finish(out, args.json)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
