"""Outbox relay throughput, PostgreSQL -> Kafka, against the same relay by hand (raw clients).

Reference (``--reference relay``, the default): the same work as the relay, written plainly
with psycopg 3 and a bare confluent-kafka ``Producer`` with the Kafka driver's delivery
settings (idempotent, acks=all, linger 5 ms, the same partitioner). In a loop, one
transaction per batch: lock the first ``--batch-size`` unsent rows (``FOR UPDATE SKIP
LOCKED``, id order), decode their headers and produce them, wait until every record has a
successful delivery report (``flush`` and a per-record ``on_delivery`` check: the same
guarantee as the driver's ``publish``), then mark them sent with the relay's own statement
(delete, and one sent-log line unless ``--delete-sent``) and commit. It claims no batch
ahead and splits none (one relay, one connection). ``--reference producer`` is the older,
unfair reference: the producer alone, the records built beforehand and the database
untouched, no delivery report looked at.

Ours: rows already committed in ``hexa_outbox``; an ``OutboxRelay`` claims them in batches,
publishes through the ``kafka://`` driver, waits for the acks and marks them sent. Filling
the outbox (``_outbox.fill``: emptied, filled, vacuumed) is not timed, on either side. Both
write to one topic in the same run, rounds alternate, medians are compared.

Needs PostgreSQL and Kafka (``scripts/services up postgres kafka``); a database of its own
is created and dropped.

    python benchmarks/outbox_relay.py [--count 100000] [--rounds 3] [--batch-size 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from _harness import cli_parser, compare, finish
from _outbox import (
    KEYS,
    bootstrap,
    fill,
    hand_relay,
    payload,
    producer_config,
    run_until_published,
    scratch_database,
)

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay

SERVICES = ("postgres", "kafka")


def parse() -> argparse.Namespace:
    parser = cli_parser(__doc__.splitlines()[0], 100_000, rounds=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--delete-sent", action="store_true", help="relay with keep_sent=False (delete rows)"
    )
    parser.add_argument("--claim-mode", choices=["lock", "lease"], default=None)
    parser.add_argument(
        "--reference",
        choices=["relay", "producer"],
        default="relay",
        help="relay: the same work by hand with the raw clients (default); producer: the "
        "producer alone (no database, no delivery check)",
    )
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

    async def raw_relay(count: int) -> float:
        fill(url, topic, count)
        return await asyncio.to_thread(
            hand_relay, url, count, batch_size=args.batch_size, keep_sent=not args.delete_sent
        )

    async def raw_producer(count: int) -> float:
        producer = Producer(producer_config())

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
        task = await run_until_published(r, count)
        rate = count / (time.perf_counter() - began)
        r.stop()
        await task
        stats = await r.stats()
        await r.close()
        assert stats.backlog == 0, stats
        return rate

    if args.reference == "relay":
        reference = (
            f"by hand: psycopg + confluent-kafka, batch {args.batch_size}",
            raw_relay,
        )
    else:
        reference = ("confluent-kafka Producer alone (raw)", raw_producer)
    try:
        result = await compare(
            "outbox relay PostgreSQL -> Kafka (rows published and marked sent)",
            args.count,
            reference,
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
