"""SQLite binds one value per row id when a relay settles a batch (marks it sent, holds
its failed rows back, parks refused ones): a ``batch_size`` above SQLite's limit on bound
values (32,766 by default since 3.32, 999 before; the test lowers it to 500 on the relay's
connections) is settled in slices, in one transaction. It failed with ``too many SQL
variables`` until the lease ran out, and the batch was sent again, and again."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from db_helpers import RecordingDriver, reset_tables, rows
from hexa_event import Event
from hexa_event._sql.urls import async_url, sync_url
from hexa_event.driver import RawRecord
from hexa_event.errors import NotStoredError, PartialPublishError
from hexa_event.outbox import Outbox, OutboxRelay

LIMIT = 500
"""The bound values a statement may have on the relay's connections."""
ROWS = 1234


def filled(tmp_path: Path) -> tuple[str, list[str]]:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    reset_tables(url)
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            ids = Outbox(notify=False).emit_many(
                conn, [Event("orders", f"k{n % 7}", {"n": n}) for n in range(ROWS)]
            )
    finally:
        engine.dispose()
    return url, ids


def limited(url: str) -> AsyncEngine:
    """An engine whose SQLite connections bind at most ``LIMIT`` values per statement."""
    engine = create_async_engine(async_url(url))

    @event.listens_for(engine.sync_engine, "connect")
    def lower(dbapi_connection: Any, _record: Any) -> None:
        raw = dbapi_connection.driver_connection._conn  # aiosqlite's sqlite3 connection
        raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, LIMIT)

    return engine


async def test_a_batch_over_sqlites_variable_limit_is_marked_sent_once(tmp_path: Path) -> None:
    url, ids = filled(tmp_path)
    engine = limited(url)
    driver = RecordingDriver()
    driver.fail_next = 1  # the first publish fails: its rows are held back, then sent
    relay = OutboxRelay(engine, driver, batch_size=2000, concurrency=1, lease=2.0, retry_delay=0)
    try:
        async with relay:
            assert await relay.drain(max_seconds=20) == ROWS
    finally:
        await engine.dispose()
    assert driver.calls == 2
    assert driver.ids() == ids  # once each, in order: the batch was not sent again
    assert rows(url, "SELECT count(*) FROM hexa_outbox") == [(0,)]
    assert rows(url, "SELECT sum(row_count) FROM hexa_outbox_sent") == [(ROWS,)]


class RefusingAll(RecordingDriver):
    """Refuses every record for good (over the broker's size limit, say)."""

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.calls += 1
        raise PartialPublishError(
            frozenset(),
            {i: NotStoredError("injected: too large for the broker") for i in range(len(records))},
        )


async def test_a_batch_over_sqlites_variable_limit_is_parked(tmp_path: Path) -> None:
    url, _ = filled(tmp_path)
    engine = limited(url)
    driver = RefusingAll()
    try:
        async with OutboxRelay(engine, driver, batch_size=ROWS, concurrency=1, lease=2.0) as relay:
            assert await relay.drain(max_seconds=20) == 0
            stats = await relay.stats()
    finally:
        await engine.dispose()
    assert (stats.backlog, stats.parked) == (0, ROWS)
    assert driver.calls == 1
    parked = "SELECT count(*) FROM hexa_outbox WHERE last_error LIKE 'parked: %'"
    assert rows(url, parked) == [(ROWS,)]
