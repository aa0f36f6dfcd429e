"""Setup shared by the outbox benchmarks (``outbox_relay.py``, ``outbox_steps.py``): a
scratch PostgreSQL database with the outbox tables, and filling it with rows to relay."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import hexa_event as he
from hexa_event.outbox import Outbox, migrate, outbox_table

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
