"""``requeue_parked(ids=...)`` takes any number of ids: more than a statement may bind
(SQLite's variable limit, PostgreSQL's 32,767 parameters) is fine."""

from __future__ import annotations

import contextlib
import sqlite3

from sqlalchemy import create_engine, update

from db_helpers import RecordingDriver, rows
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxRelay, outbox_table, requeue_parked
from hexa_event.outbox.claims import PARKED, PARKED_UNTIL


def _bind_limit() -> int:
    """More ids than either database binds in one statement."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        sqlite_limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(sqlite_limit, 32_767) + 1


async def test_requeue_parked_takes_more_ids_than_a_statement_binds(db_url: str) -> None:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            Outbox(notify=False).emit_many(conn, [Event("c", f"k{n}", {"n": n}) for n in range(4)])
            conn.execute(update(outbox_table).values(lease_token=PARKED, lease_until=PARKED_UNTIL))
    finally:
        engine.dispose()
    parked = [r[0] for r in rows(db_url, "SELECT id FROM hexa_outbox ORDER BY id")]
    # The ids of a big incident's export, say: three parked rows among many gone since.
    wanted = [*range(parked[-1] + 1, parked[-1] + 1 + _bind_limit()), *parked[:3]]
    async with OutboxRelay(db_url, RecordingDriver()) as relay:
        assert await requeue_parked(relay.engine, ids=wanted) == 3
        stats = await relay.stats()
        assert (stats.backlog, stats.parked) == (3, 1)
