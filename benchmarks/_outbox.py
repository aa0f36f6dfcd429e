"""Setup shared by the outbox benchmarks (``outbox_relay.py``, ``outbox_steps.py``): a
scratch PostgreSQL database with the outbox tables, and filling it with rows to relay."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay, migrate, outbox_table

KEYS = 1000
"""Rows go to this many keys, round robin."""
FILL_TX = 5000
"""Rows per filling transaction."""


def pg_url() -> str:
    return os.environ.get("HEXA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/hexa_event")


def bootstrap() -> str:
    return os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def payload(n: int) -> dict[str, object]:
    return {"order_id": f"order-{n}", "customer": f"c-{n % 977}", "total": n * 7 % 10000}


async def run_until_published(relay: OutboxRelay, count: int) -> asyncio.Task[None]:
    """Start ``relay.run()`` and return its task once the relay has published ``count``
    rows (looked at every 5 ms); raises if the relay stops before."""
    task = asyncio.create_task(relay.run())
    while relay.published < count:
        if task.done():
            task.result()
            raise RuntimeError("relay stopped early")
        await asyncio.sleep(0.005)
    return task


def scratch_database(prefix: str) -> tuple[str, Callable[[], None]]:
    """A new database (named ``<prefix>_<random>``) with the outbox tables, on the server of
    ``HEXA_POSTGRES_URL``: its URL, and the function that drops it."""
    base = make_url(pg_url())
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    try:
        migrate(url)
    except BaseException:
        drop()
        raise
    return url, drop


def fill(url: str, topic: str, count: int) -> None:
    """Empty the outbox and its sent log, then commit ``count`` rows for ``topic``
    (``FILL_TX`` per transaction), then ``VACUUM ANALYZE`` the outbox: every round starts
    from the same table. Not timed."""
    outbox = Outbox(notify=False)
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.begin() as conn:
            conn.execute(outbox_table.delete())
            conn.execute(text("DELETE FROM hexa_outbox_sent"))
        for start in range(0, count, FILL_TX):
            events = [
                he.Event(channel=topic, key=f"key-{n % KEYS}", payload=payload(n))
                for n in range(start, min(count, start + FILL_TX))
            ]
            with engine.begin() as conn:
                outbox.emit_many(conn, events)
    finally:
        engine.dispose()
    engine = create_engine(
        make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE hexa_outbox"))
    finally:
        engine.dispose()


CLAIM_SQL = (
    "SELECT id, channel, key, headers, body FROM hexa_outbox"
    " WHERE sent_at IS NULL AND (lease_until IS NULL OR lease_until < now())"
    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)
MARK_SQL = {
    # The relay's own marks (hexa_event.outbox.sentlog), written out.
    "log": (
        "WITH gone AS (DELETE FROM hexa_outbox WHERE id = ANY(%s) RETURNING id, event_id)"
        " INSERT INTO hexa_outbox_sent (sent_at, first_id, last_id, row_count, event_ids)"
        " SELECT now(), min(id), max(id), count(*), string_agg(event_id, ' ' ORDER BY id)"
        " FROM gone HAVING count(*) > 0"
    ),
    "delete": "DELETE FROM hexa_outbox WHERE id = ANY(%s)",
}


def producer_config() -> dict[str, object]:
    """The Kafka driver's delivery settings (``KafkaOptions.producer``), for the raw side."""
    return {
        "bootstrap.servers": bootstrap(),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "partitioner": "fnv1a_random",
    }


def hand_relay(
    url: str,
    count: int,
    *,
    batch_size: int,
    keep_sent: bool,
    before_close: Callable[[], object] | None = None,
) -> float:
    """Relay ``count`` committed rows the way one would by hand with the raw clients (see
    ``outbox_relay.py``): per batch, one transaction that locks the rows, produces them,
    waits for every delivery report and marks them sent. Rows per second, connecting
    included (as the relay's engine connects in its timed run). ``before_close`` runs once
    the rows are relayed, while the connection is still open (``outbox_steps.py`` reads its
    backend's CPU there). Blocking: run it in a thread."""
    import psycopg
    from confluent_kafka import Producer

    from hexa_event.outbox.store import decode_headers

    mark = MARK_SQL["log" if keep_sent else "delete"]
    failures: list[object] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(err)

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    began = time.perf_counter()
    producer = Producer(producer_config())
    produce, poll = producer.produce, producer.poll
    sent = 0
    with psycopg.connect(dsn) as conn:
        cur = conn.cursor(binary=True)
        while sent < count:
            with conn.transaction():
                rows = cur.execute(CLAIM_SQL, (batch_size,)).fetchall()
                if not rows:
                    raise RuntimeError(f"the outbox ran dry after {sent} of {count} rows")
                for _id, channel, key, headers, body in rows:
                    while True:
                        try:
                            produce(
                                channel,
                                body,
                                key.encode(),
                                headers=decode_headers(headers),
                                on_delivery=on_delivery,
                            )
                            break
                        except BufferError:
                            poll(0.005)
                if producer.flush(60) or failures:
                    raise RuntimeError(f"not acknowledged: {failures[:3]}")
                cur.execute(mark, ([r[0] for r in rows],))
            sent += len(rows)
        rate = count / (time.perf_counter() - began)
        if before_close is not None:
            before_close()
    return rate
