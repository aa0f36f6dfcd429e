"""``drain()`` waits while rows are held back (behind a key's row that waits to retry, or
another relay's), looking every 0.1 s whether any row is still ready. That look counted
every unsent row, without bound, and not every 0.1 s but as fast as it could (the wake-up
the settled batch had set was never cleared): 152 full counts in half a second.
It now reads one row (LIMIT 1), and ``backlog_ready()`` counts up to ``backlog_limit``;
the drain still ends once the outbox is empty."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event

from db_helpers import RecordingDriver, outbox_emit, rows
from hexa_event import Event
from hexa_event.outbox import OutboxRelay

READS_THE_OUTBOX = re.compile(r"^\s*SELECT\b.*\bFROM\s+hexa_outbox\b(?!_)", re.S | re.I)


def emit(url: str, count: int) -> list[str]:
    return outbox_emit(url, [Event("orders", "k", {"n": n}) for n in range(count)])


async def test_drain_looks_for_ready_rows_with_a_bounded_read(db_url: str) -> None:
    ids = emit(db_url, 600)
    driver = RecordingDriver()
    driver.fail_next = 1  # rows 1-100 wait 0.5 s to retry; the 500 after them wait too
    # Lease claims on both databases: claims and marks are then UPDATE/INSERT/DELETE, and
    # every SELECT of the outbox is the drain's look for ready rows.
    relay = OutboxRelay(
        db_url,
        driver,
        batch_size=100,
        concurrency=1,
        retry_delay=0.5,
        claim_mode="lease",
    )
    looks: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if READS_THE_OUTBOX.search(statement):
            looks.append((statement, parameters))

    event.listen(relay.engine.sync_engine, "before_cursor_execute", seen)
    async with relay:
        assert await relay.drain(max_seconds=30) == 600
    assert driver.ids() == ids  # in order, once each (the failed batch stored nothing)
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]
    # It waited, looking every 0.1 s (not as fast as it could) while the rows were held
    # back for 0.5 s.
    assert 2 <= len(looks) <= 30, len(looks)
    unbounded = [s for s, _ in looks if "LIMIT" not in s.upper()]
    assert unbounded == [], unbounded[0]


async def test_drain_ends_at_once_on_an_empty_outbox(db_url: str) -> None:
    async with OutboxRelay(db_url, RecordingDriver(), poll_interval=30) as relay:
        assert await relay.drain(max_seconds=30) == 0
        assert await relay.backlog_ready() == 0
    ids = emit(db_url, 3)
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver, backlog_limit=2) as relay:
        assert await relay.backlog_ready() == 2  # at most backlog_limit rows read
        assert await relay.drain(max_seconds=30) == 3
        assert await relay.backlog_ready() == 0
    assert driver.ids() == ids
