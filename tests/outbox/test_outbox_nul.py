"""An event whose id, key or channel holds a NUL is refused with our error before the
insert on PostgreSQL, whose text columns cannot hold one (asyncpg's error would abort the
caller's transaction, the order it was to commit with included)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from hexa_event import Event
from hexa_event._sql.urls import async_url, sync_url
from hexa_event.errors import InvalidEventError
from hexa_event.outbox import Outbox, outbox_table

pytestmark = pytest.mark.postgres

FIELDS = [{"id": "id\x00x"}, {"key": "k\x00"}, {"channel": "orders\x00x"}]


def event(fields: dict[str, Any]) -> Event[Any]:
    return Event(**{"channel": "orders", "key": "k", "payload": {}, **fields})


@pytest.mark.parametrize("fields", FIELDS, ids=["id", "key", "channel"])
async def test_a_nul_is_refused_and_the_transaction_goes_on(
    pg_url: str, fields: dict[str, Any]
) -> None:
    engine = create_async_engine(async_url(pg_url))
    outbox = Outbox()
    try:
        async with engine.begin() as conn:
            with pytest.raises(InvalidEventError, match="NUL"):
                await outbox.emit_async(conn, event(fields))
            await outbox.emit_async(conn, event({}))  # the caller's transaction goes on
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar()
        assert count == 1
    finally:
        await engine.dispose()


@pytest.mark.parametrize("fields", FIELDS, ids=["id", "key", "channel"])
def test_a_nul_is_refused_by_the_sync_emit(pg_url: str, fields: dict[str, Any]) -> None:
    engine = create_engine(sync_url(pg_url))
    try:
        with engine.begin() as conn, pytest.raises(InvalidEventError, match="NUL"):
            Outbox().emit(conn, event(fields))
    finally:
        engine.dispose()
