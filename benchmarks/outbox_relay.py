"""Outbox relay throughput, PostgreSQL -> Kafka, against the raw confluent-kafka producer.

Reference: a bare confluent-kafka ``Producer`` with the Kafka driver's delivery settings
(idempotent, acks=all, linger 5 ms) producing the same records (same key, headers and body
as the outbox rows) and flushing. Ours: rows already committed in ``hexa_outbox``; an
``OutboxRelay`` claims them in batches, publishes through the ``kafka://`` driver, waits
for the acks and marks them sent. Filling the outbox is not timed. Both write to one topic
in the same run, rounds alternate, medians are compared.

Needs PostgreSQL and Kafka (``scripts/services up postgres kafka``); a database of its own
is created and dropped.

    python benchmarks/outbox_relay.py [--count 100000] [--rounds 3] [--batch-size 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from _harness import compare, finish
from _outbox import KEYS, bootstrap, fill, payload, scratch_database

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay

SERVICES = ("postgres", "kafka")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--delete-sent", action="store_true", help="relay with keep_sent=False (delete rows)"
    )
    parser.add_argument("--claim-mode", choices=["lock", "lease"], default=None)
    parser.add_argument("--json", help="also write the result to this file")
    return parser.parse_args()


async def main() -> None:
    args = parse()
    from confluent_kafka import Producer

    url, drop = scratch_database("hexa_bench")
    topic = f"bench-outbox-{uuid.uuid4().hex[:8]}"
    driver = he.connect(f"kafka://{bootstrap()}")
    await driver.provision([topic])
    sample = Outbox().seal(he.Event(channel=topic, key="key-1", payload=payload(1)), None)
    headers = list(sample.headers.items())
    bodies = [Outbox().seal(he.Event(topic, "k", payload(n)), None).body for n in range(KEYS)]

    async def raw(count: int) -> float:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )

        def run() -> float:
            began = time.perf_counter()
            for n in range(count):
                while True:
                    try:
                        producer.produce(
                            topic, bodies[n % KEYS], f"key-{n % KEYS}".encode(), headers=headers
                        )
                        break
                    except BufferError:
                        producer.poll(0.005)
                producer.poll(0)
            producer.flush(60)
            return count / (time.perf_counter() - began)

        return await asyncio.to_thread(run)

    async def relay(count: int) -> float:
        fill(url, topic, count)
        r = OutboxRelay(
            url,
            driver,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            keep_sent=not args.delete_sent,
            claim_mode=args.claim_mode,
            listen=False,
            poll_interval=0.05,
        )
        began = time.perf_counter()
        task = asyncio.create_task(r.run())
        while r.published < count:
            if task.done():
                task.result()
                raise RuntimeError("relay stopped early")
            await asyncio.sleep(0.005)
        rate = count / (time.perf_counter() - began)
        r.stop()
        await task
        stats = await r.stats()
        await r.close()
        assert stats.backlog == 0, stats
        return rate

    try:
        result = await compare(
            "outbox relay PostgreSQL -> Kafka (rows published and marked sent)",
            args.count,
            ("confluent-kafka Producer (raw)", raw),
            (
                f"OutboxRelay batch {args.batch_size} x{args.concurrency}"
                f"{' delete-sent' if args.delete_sent else ''} {args.claim_mode or 'lock'}",
                relay,
            ),
            target=">= 0.6",
            rounds=args.rounds,
            unit="rows/s",
        )
        finish(result, args.json)
    finally:
        await driver.close()
        drop()


if __name__ == "__main__":
    asyncio.run(main())
