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
import os
import sys
import time
import uuid
from pathlib import Path

from _harness import compare, finish
from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay, migrate, outbox_table

KEYS = 1000
FILL_TX = 5000
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


def pg_url() -> str:
    return os.environ.get("HEXA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/hexa_event")


def bootstrap() -> str:
    return os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def payload(n: int) -> dict[str, object]:
    return {"order_id": f"order-{n}", "customer": f"c-{n % 977}", "total": n * 7 % 10000}


def fill(url: str, topic: str, count: int) -> None:
    outbox = Outbox(notify=False)
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            conn.execute(outbox_table.delete())
        for start in range(0, count, FILL_TX):
            events = [
                he.Event(channel=topic, key=f"key-{n % KEYS}", payload=payload(n))
                for n in range(start, min(count, start + FILL_TX))
            ]
            with engine.begin() as conn:
                outbox.emit_many(conn, events)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE hexa_outbox"))
    finally:
        engine.dispose()


async def main() -> None:
    args = parse()
    from confluent_kafka import Producer

    base = make_url(pg_url())
    dbname = f"hexa_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    url = base.set(drivername="postgresql", database=dbname).render_as_string(hide_password=False)
    migrate(url)
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
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
