"""Consume-and-ack throughput on Kafka: a hexa-event receiver against raw confluent-kafka.

A topic (3 partitions, 64 keys) is pre-filled with N events sealed by our envelope. Raw:
``Consumer.consume(500)`` in a loop, msgspec-decode each body into the dataclass, store its
offset (the ack), commit at the end. Ours: a receiver whose handler takes the decoded
dataclass and returns (context extraction, per-key lanes, dedup keys, ack, commit of the
lowest unfinished offset). Both are timed from the first record to the last one handled;
ours stops after ``BUDGET`` seconds and then counts what it handled. The last comparison
runs both sides with the collector tuned as ``hexa-event run`` tunes it once started (heap
frozen, young threshold raised; docs/deploy.md, "The garbage collector").

    HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/kafka_consume.py [--count 50000]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import msgspec
from _harness import Comparison, Tick, cli, compare_all, tuned_side
from _kafka import BOOTSTRAP, fill_sealed, raw_consume

import hexa_event as he

BUDGET = 30.0
"""Seconds a run of ours may take; a slower run reports its rate over what it handled (so a
regression cannot make ``make bench`` run for an hour)."""

_topics: dict[int, str] = {}


def fill(count: int) -> str:
    """A fresh topic holding ``count`` events sealed by our envelope (once per count)."""
    if count not in _topics:
        _topics[count] = fill_sealed("consume", count, lambda n: Tick(n, "tick", 4200, "EUR", "x"))
    return _topics[count]


async def raw(count: int) -> float:
    topic = await asyncio.to_thread(fill, count)
    decoder = msgspec.json.Decoder(Tick)
    return await asyncio.to_thread(raw_consume, topic, count, decoder.decode)


async def ours(count: int) -> float:
    topic = await asyncio.to_thread(fill, count)
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    receiver = driver.receiver("bench", concurrency=256)
    done = asyncio.Event()
    seen = 0
    began = last = 0.0

    @receiver.subscribe(topic, action=f"bench-{uuid.uuid4().hex[:8]}", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen, began, last
        last = time.perf_counter()
        if seen == 0:
            began = last
        seen += 1
        if seen == count:
            done.set()

    async with receiver:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), BUDGET)
        handled = seen
    await driver.close()
    if handled < 2:
        raise RuntimeError(f"the receiver handled {handled} events in {BUDGET} s")
    return handled / (last - began)


async def driver_only(count: int) -> float:
    """The driver alone: fetch, decode, ack, settle each batch (where does the time go?)."""
    topic = await asyncio.to_thread(fill, count)
    decoder = msgspec.json.Decoder(Tick)
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    sub = await driver.subscribe(
        he.driver.SubscriptionSpec(group=f"drv-{uuid.uuid4().hex[:8]}", channels=(topic,))
    )
    seen = 0
    began = None
    while seen < count and (began is None or time.perf_counter() - began < BUDGET):
        deliveries = await sub.fetch(256)
        if began is None:
            began = time.perf_counter()
        for delivery in deliveries:
            decoder.decode(delivery.record.body)
            delivery.ack()
        await sub.settle(deliveries)  # one batch settlement per fetch, as the receiver does
        seen += len(deliveries)
    elapsed = time.perf_counter() - (began or time.perf_counter())
    await sub.close()
    await driver.close()
    return seen / elapsed


RAW = ("raw confluent-kafka consume+decode+store", raw)
RECEIVER = ("hexa-event receiver", ours)
COMPARISONS = (
    Comparison("Kafka consume + ack", RAW, RECEIVER, target=">= 0.5"),
    Comparison(
        "Kafka consume + ack, driver only (fetch, decode, ack)",
        RAW,
        ("KafkaSubscription fetch/ack", driver_only),
    ),
    Comparison(
        "Kafka consume + ack, collector tuned on both sides as `hexa-event run` does",
        tuned_side(RAW),
        tuned_side(RECEIVER),
    ),
)


async def main() -> None:
    await compare_all(cli(__doc__.splitlines()[0], 50_000), COMPARISONS)


if __name__ == "__main__":
    asyncio.run(main())
