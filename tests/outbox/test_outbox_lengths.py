"""An event whose id, key or channel is longer than its outbox column is refused with our
error before the insert (PostgreSQL would refuse it and abort the caller's transaction);
SQLite, which does not enforce the lengths, keeps storing it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from hexa_event import Event
from hexa_event._sql.urls import async_url
from hexa_event.errors import InvalidEventError
from hexa_event.outbox import Outbox, outbox_table


@pytest.mark.parametrize(
    ("fields", "limit"),
    [({"id": "x" * 65}, 64), ({"key": "k" * 513}, 512), ({"channel": "c" * 256}, 255)],
    ids=["id", "key", "channel"],
)
async def test_a_field_longer_than_its_column(
    db_url: str, fields: dict[str, Any], limit: int
) -> None:
    engine = create_async_engine(async_url(db_url))
    outbox = Outbox()
    long = Event(**{"channel": "orders", "key": "k", "payload": {}, **fields})
    sqlite = db_url.startswith("sqlite")
    try:
        async with engine.begin() as conn:
            if sqlite:
                await outbox.emit_async(conn, long)  # not enforced there: stored, as before
            else:
                with pytest.raises(InvalidEventError, match=f"at most {limit}"):
                    await outbox.emit_async(conn, long)
            # The caller's transaction goes on.
            await outbox.emit_async(conn, Event(channel="orders", key="k", payload={}))
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar()
        assert count == (2 if sqlite else 1)
    finally:
        await engine.dispose()
