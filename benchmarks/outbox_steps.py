"""Where the outbox relay's time goes: CPU per row of the relay process and of its
PostgreSQL backends, per way of marking rows sent, with and without the broker.

Modes (alternating rounds in one run, medians):

- ``null``: the relay into a driver that stores nothing and returns at once: the
  database's and the relay's own cost, no broker.
- ``kafka``: the relay into the ``kafka://`` driver (as ``outbox_relay.py``).
- ``raw``: the raw confluent-kafka producer on the same records (the producer alone).
- ``hand-log`` / ``hand-delete``: the relay written by hand with the raw clients
  (``_outbox.hand_relay``, the reference of ``outbox_relay.py``), marking with the sent
  log or deleting only.

Marks: ``log`` (rows deleted, one sent-log line per batch: the default), ``update`` (rows
marked in place: an outbox without a sent log), ``delete`` (``keep_sent=False``).
``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of one claim and each mark on a
batch instead.

    python benchmarks/outbox_steps.py [--count 50000] [--rounds 3] [--modes null,kafka,raw]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Sequence

from _outbox import (
    KEYS,
    bootstrap,
    fill,
    hand_relay,
    payload,
    run_until_published,
    scratch_database,
)
from sqlalchemy import create_engine, make_url, text

import hexa_event as he
from hexa_event.driver import Driver, Features, RawRecord, Subscription, SubscriptionSpec
from hexa_event.outbox import Outbox, OutboxRelay
from hexa_event.outbox.claims import LockClaims
from hexa_event.outbox.sentlog import mark_statements

TICK = os.sysconf("SC_CLK_TCK")


class NullDriver(Driver):
    """Stores nothing: publish returns at once."""

    features = Features(name="null", persistent=True)

    async def publish(self, records: Sequence[RawRecord]) -> None:
        return None

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def backends(url: str, dbname: str) -> dict[int, float]:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            pids = [
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": dbname},
                )
            ]
    finally:
        engine.dispose()
    return {pid: cpu_of(pid) for pid in pids}


async def run_relay(
    url: str, dbname: str, driver: Driver, count: int, mark: str, batch: int
) -> dict[str, float]:
    relay = OutboxRelay(
        url,
        driver,
        batch_size=batch,
        keep_sent=mark != "delete",
        listen=False,
        poll_interval=0.05,
    )
    claims = relay._claims
    assert isinstance(claims, LockClaims)
    if mark == "update":  # as on an outbox without a sent log
        claims._marks = mark_statements(relay.table, "update", postgres=True, unsent_only=False)
        claims.mark_mode = "update"
    before_cpu = time.process_time()
    began = time.perf_counter()
    task = await run_until_published(relay, count)
    wall = time.perf_counter() - began
    cpu = time.process_time() - before_cpu
    pg = sum(backends(url, dbname).values())
    relay.stop()
    await task
    await relay.close()
    return {"rate": count / wall, "py_us": cpu / count * 1e6, "pg_us": pg / count * 1e6}


def run_raw(topic: str, records: list[RawRecord]) -> dict[str, float]:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )
    count = len(records)
    before = time.process_time()
    began = time.perf_counter()
    for r in records:
        while True:
            try:
                producer.produce(topic, r.body, r.key.encode(), headers=dict(r.headers))
                break
            except BufferError:
                producer.poll(0.005)
        producer.poll(0)
    producer.flush(60)
    wall = time.perf_counter() - began
    return {
        "rate": count / wall,
        "py_us": (time.process_time() - before) / count * 1e6,
        "pg_us": 0.0,
    }


def run_hand(url: str, dbname: str, count: int, mark: str, batch: int) -> dict[str, float]:
    pg: list[float] = []
    before = time.process_time()
    rate = hand_relay(
        url,
        count,
        batch_size=batch,
        keep_sent=mark != "delete",
        before_close=lambda: pg.append(sum(backends(url, dbname).values())),
    )
    return {
        "rate": rate,
        "py_us": (time.process_time() - before) / count * 1e6,
        "pg_us": pg[0] / count * 1e6,
    }


LOCK_SQL = (
    "SELECT id FROM hexa_outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
MARK_SQL = {
    "update": "UPDATE hexa_outbox SET sent_at = now(), lease_until = NULL, last_error = NULL, "
    "attempts = attempts + 1 WHERE id = ANY($1)",
    "delete": "DELETE FROM hexa_outbox WHERE id = ANY($1)",
    "log": "WITH gone AS (DELETE FROM hexa_outbox WHERE id = ANY($1) RETURNING id, event_id) "
    "INSERT INTO hexa_outbox_sent (sent_at, first_id, last_id, row_count, event_ids) "
    "SELECT now(), min(id), max(id), count(*), string_agg(event_id, ' ' ORDER BY id) "
    "FROM gone HAVING count(*) > 0",
}


async def explain(url: str, topic: str, count: int, batch: int) -> None:
    """EXPLAIN ANALYZE of each mark on one locked batch (rolled back: the same rows)."""
    import asyncpg

    fill(url, topic, count)
    conn = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        for mark, sql in MARK_SQL.items():
            tr = conn.transaction()
            await tr.start()
            ids = [r[0] for r in await conn.fetch(LOCK_SQL, batch)]
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, ids)
            print(f"--- {mark} ({len(ids)} rows)")
            for line in plan:
                if "Index Cond" not in line[0]:  # the ids, spelled out
                    print(line[0])
            await tr.rollback()
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument(
        "--modes", default="null-update,null-log,null-delete,kafka-update,kafka-log,raw"
    )
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()

    url, drop = scratch_database("hexa_steps")
    dbname = make_url(url).database or ""
    topic = f"bench-steps-{uuid.uuid4().hex[:8]}"
    kafka = None
    try:
        if args.explain:
            await explain(url, topic, args.count, args.batch_size)
            return
        kafka = he.connect(f"kafka://{bootstrap()}")
        await kafka.provision([topic])
        outbox = Outbox()
        records = [
            outbox.seal(he.Event(topic, f"key-{n % KEYS}", payload(n)), None)
            for n in range(args.count)
        ]
        modes = args.modes.split(",")
        results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for round_ in range(args.rounds):
            for mode in modes:
                if mode == "raw":
                    r = await asyncio.to_thread(run_raw, topic, records)
                elif mode.startswith("hand-"):
                    fill(url, topic, args.count)
                    r = await asyncio.to_thread(
                        run_hand, url, dbname, args.count, mode[5:], args.batch_size
                    )
                else:
                    target, mark = mode.split("-")
                    fill(url, topic, args.count)
                    driver = NullDriver() if target == "null" else kafka
                    r = await run_relay(url, dbname, driver, args.count, mark, args.batch_size)
                results[mode].append(r)
                print(
                    f"round {round_ + 1} {mode:14s} {r['rate']:9,.0f} rows/s  "
                    f"relay {r['py_us']:5.1f} us/row  pg {r['pg_us']:5.1f} us/row",
                    flush=True,
                )
        print("medians:")
        for mode, rs in results.items():
            print(
                f"  {mode:14s} {statistics.median(r['rate'] for r in rs):9,.0f} rows/s  "
                f"relay {statistics.median(r['py_us'] for r in rs):5.1f} us/row  "
                f"pg {statistics.median(r['pg_us'] for r in rs):5.1f} us/row"
            )
    finally:
        if kafka is not None:
            await kafka.close()
        drop()


if __name__ == "__main__":
    asyncio.run(main())
