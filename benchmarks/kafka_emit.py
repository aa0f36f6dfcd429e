"""Emit throughput on Kafka: hexa-event's ``emit_many`` against raw confluent-kafka.

Both send the same records (topic, 64 keys, the ~80-byte JSON body and the headers our
envelope writes), idempotent with acks=all, and finish when every record is acknowledged.
Raw: ``Producer.produce`` in a loop, then ``flush``. Ours: ``Emitter.emit_many`` in batches
of 1,000 events (payload encoding, context headers and event ids included), several
batches in flight at once (the relay's path), each returning after the broker's ack.

    HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/kafka_emit.py [--count 50000]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _harness import Comparison, Tick, cli, compare_all, in_batches, sealed, timed
from _kafka import BOOTSTRAP, KEYS, new_topic
from confluent_kafka import Producer

import hexa_event as he

BATCH = 1000
IN_FLIGHT = 4


def _tick(n: int) -> Tick:
    return Tick(n, "tick", 4200, "EUR", "small event")


def _sample_record() -> he.driver.RawRecord:
    envelope = he.envelope.Envelope()
    return envelope.seal(he.Event("t", "k0", _tick(12345)), he.Context())


def raw_sync(topic: str, count: int) -> float:
    sample = _sample_record()
    headers: Any = list(sample.headers.items())
    body = sample.body
    keys = [f"k{n}".encode() for n in range(KEYS)]
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "fnv1a_random",
        }
    )
    failures = 0

    def report(err: object, _msg: object) -> None:
        nonlocal failures
        if err is not None:
            failures += 1

    producer.list_topics(topic, timeout=10)  # connect before timing, as ours does
    began = time.perf_counter()
    for n in range(count):
        while True:
            try:
                producer.produce(topic, body, keys[n % KEYS], headers=headers, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        if n % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - began
    assert left == 0
    assert failures == 0
    return count / elapsed


async def raw(count: int) -> float:
    return await asyncio.to_thread(raw_sync, new_topic("emit-raw"), count)


async def ours(count: int) -> float:
    topic = new_topic("emit-ours")
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    emitter = driver.emitter()
    await emitter.emit(he.Event(topic, "warm-up", _tick(-1)))  # connect before timing
    rate = await timed(count, lambda: emit_all(emitter, topic, count))
    await driver.close()
    return rate


async def emit_all(emitter: he.Emitter, topic: str, count: int) -> None:
    """``count`` events to ``topic`` through ``emit_many``, ``BATCH`` a call and at most
    ``IN_FLIGHT`` calls at once: the emit row's timed part (``_kafka_emit_cpu.py``'s too)."""
    ctx = he.Context(correlation_id="bench")

    async def send(start: int, stop: int) -> None:
        events = (he.Event(topic, f"k{n % KEYS}", _tick(n)) for n in range(start, stop))
        await emitter.emit_many(events, ctx)

    await in_batches(count, send, BATCH, IN_FLIGHT)


async def publish_all(driver: he.Connection, records: list[he.driver.RawRecord]) -> None:
    """``records`` through the driver's ``publish``, ``BATCH`` a call and at most
    ``IN_FLIGHT`` calls at once: the driver row's timed part (``_kafka_emit_cpu.py``'s too)."""

    async def send(start: int, stop: int) -> None:
        await driver.publish(records[start:stop])

    await in_batches(len(records), send, BATCH, IN_FLIGHT)


async def driver_only(count: int) -> float:
    """The driver alone: publish records sealed before timing (where does the time go?)."""
    topic = new_topic("emit-driver")
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    records = sealed(topic, count, _tick)
    await driver.publish(records[:1])
    rate = await timed(count, lambda: publish_all(driver, records))
    await driver.close()
    return rate


RAW = ("raw confluent-kafka produce+flush", raw)
COMPARISONS = (
    Comparison(
        "Kafka emit (acked, idempotent)", RAW, ("hexa-event emit_many", ours), target=">= 0.9"
    ),
    Comparison(
        "Kafka emit, driver only (records sealed before timing)",
        RAW,
        ("KafkaDriver.publish", driver_only),
    ),
)


async def main() -> None:
    await compare_all(cli(__doc__.splitlines()[0], 50_000), COMPARISONS)


if __name__ == "__main__":
    asyncio.run(main())
