"""Cleaner: deletes what was sent before the retention (sent-log lines, rows marked in
place by older relays), never unsent rows, in batches."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import create_engine, select, update

from db_helpers import RecordingDriver, rows
from hexa_event import Event
from hexa_event._sql.clock import utcnow
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxCleaner, OutboxRelay, outbox_table, sent_table


async def test_deletes_only_old_sent_rows(db_url: str) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        outbox.emit_many(conn, [Event("c", f"k{i}", payload=i) for i in range(27)])
    async with OutboxRelay(db_url, RecordingDriver(), batch_size=4) as relay:
        for _ in range(5):
            assert await relay.run_once() == 4  # 5 lines of 4 rows; 7 rows stay unsent
    log = sent_table(outbox_table)
    old = utcnow() - timedelta(days=8)
    with engine.begin() as conn:
        conn.execute(update(outbox_table).values(created_at=old))  # everything is old
        firsts = list(conn.execute(select(log.c.first_id).order_by(log.c.first_id)).scalars())
        conn.execute(update(log).where(log.c.first_id.in_(firsts[:3])).values(sent_at=old))
        # Two rows marked sent in place long ago (an older relay), one recently.
        unsent = [
            r[0]
            for r in conn.execute(outbox_table.select().where(outbox_table.c.sent_at.is_(None)))
        ]
        mark = update(outbox_table).where(outbox_table.c.id.in_(unsent[:2])).values(sent_at=old)
        conn.execute(mark)
        conn.execute(
            update(outbox_table).where(outbox_table.c.id == unsent[2]).values(sent_at=utcnow())
        )
    engine.dispose()
    async with OutboxCleaner(db_url, retention=timedelta(days=7), batch_size=2) as cleaner:
        deleted = await cleaner.run_once()
        assert await cleaner.run_once() == 0
    assert deleted == 3 * 4 + 2
    assert rows(db_url, "SELECT count(*), count(sent_at) FROM hexa_outbox") == [(5, 1)]
    assert rows(db_url, "SELECT count(*), sum(row_count) FROM hexa_outbox_sent") == [(2, 8)]
