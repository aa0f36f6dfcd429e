"""``requeue_parked(ids=...)`` on a SQLite build with a lower limit on bound values than
its version's default (999 before 3.32, or set by the build): the ids go in slices that
fit, halved as the settle writes are while SQLite says they are too many. It bound 10,000
ids per statement and failed with ``too many SQL variables``."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, update
from sqlalchemy.ext.asyncio import create_async_engine

from db_helpers import reset_tables, rows
from hexa_event import Event
from hexa_event._sql.urls import async_url, sync_url
from hexa_event.outbox import Outbox, outbox_table, requeue_parked
from hexa_event.outbox.claims import PARKED, PARKED_UNTIL

LIMIT = 500
"""The bound values a statement may have on the requeuing engine's connections."""


async def test_requeue_parked_fits_a_low_sqlite_variable_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    reset_tables(url)
    sync = create_engine(sync_url(url))
    try:
        with sync.begin() as conn:
            Outbox(notify=False).emit_many(conn, [Event("c", f"k{n}", {"n": n}) for n in range(5)])
            conn.execute(update(outbox_table).values(lease_token=PARKED, lease_until=PARKED_UNTIL))
    finally:
        sync.dispose()
    parked = [r[0] for r in rows(url, "SELECT id FROM hexa_outbox ORDER BY id")]
    wanted = [*range(parked[-1] + 1, parked[-1] + 1 + 3 * LIMIT), *parked[:4]]

    engine = create_async_engine(async_url(url))

    @event.listens_for(engine.sync_engine, "connect")
    def lower(dbapi_connection: Any, _record: Any) -> None:
        raw = dbapi_connection.driver_connection._conn  # aiosqlite's sqlite3 connection
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, LIMIT)

    try:
        assert await requeue_parked(engine, ids=wanted) == 4
    finally:
        await engine.dispose()
    still = "SELECT count(*) FROM hexa_outbox WHERE lease_token = 'parked'"
    assert rows(url, still) == [(1,)]
