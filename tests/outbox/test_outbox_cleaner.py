"""Cleaner: deletes sent rows older than the retention, never unsent ones, in batches."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import create_engine, update

from db_helpers import RecordingDriver, rows
from hexa_event import Event
from hexa_event._sql.clock import utcnow
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxCleaner, OutboxRelay, outbox_table


async def test_deletes_only_old_sent_rows(db_url: str) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        outbox.emit_many(conn, [Event("c", f"k{i}", payload=i) for i in range(25)])
    async with OutboxRelay(db_url, RecordingDriver(), batch_size=20) as relay:
        assert await relay.run_once() == 20  # 5 stay unsent
    with engine.begin() as conn:
        old = utcnow() - timedelta(days=8)
        conn.execute(update(outbox_table).values(created_at=old))  # everything is old
        conn.execute(
            update(outbox_table)
            .where(outbox_table.c.sent_at.is_not(None), outbox_table.c.id % 2 == 0)
            .values(sent_at=old)
        )
    engine.dispose()
    old_sent = rows(db_url, "SELECT count(*) FROM hexa_outbox WHERE sent_at < :t", t=utcnow())
    async with OutboxCleaner(db_url, retention=timedelta(days=7), batch_size=3) as cleaner:
        deleted = await cleaner.run_once()
        assert await cleaner.run_once() == 0
    assert deleted == 10
    assert old_sent[0][0] == 20
    remaining = rows(
        db_url,
        "SELECT count(*), count(sent_at) FROM hexa_outbox",
    )
    assert remaining == [(15, 10)]  # 5 unsent (old, never deleted) + 10 recently sent
