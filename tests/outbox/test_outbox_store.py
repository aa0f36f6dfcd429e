"""Outbox emit: rows join the caller's transaction (sync and async, PostgreSQL and SQLite)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, make_url, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from db_helpers import rows
from hexa_event import Context, Event
from hexa_event._sql.urls import async_url, sync_url
from hexa_event.envelope import EVENT_ID
from hexa_event.outbox import Outbox, ddl, migrate, migrate_async, outbox_table
from hexa_event.outbox.store import decode_headers


def _event(n: int, key: str = "k") -> Event[dict[str, int]]:
    return Event(channel="orders", key=key, payload={"n": n})


def test_sync_session_commit_and_rollback(db_url: str) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    with Session(engine) as session, session.begin():
        eid = outbox.emit(session, _event(1), Context(correlation_id="c-1"))
    with Session(engine) as session:
        session.begin()
        outbox.emit(session, _event(2))
        session.rollback()
    stored = rows(db_url, "SELECT event_id, channel, key, headers, body FROM hexa_outbox")
    engine.dispose()
    assert [r[0] for r in stored] == [eid]
    _, channel, key, headers, body = stored[0]
    assert (channel, key, bytes(body)) == ("orders", "k", b'{"n":1}')
    decoded = decode_headers(bytes(headers))
    assert decoded[EVENT_ID] == eid.encode()
    assert decoded["_ctx_correlation_id"] == b"c-1"


def test_sync_connection(db_url: str) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    with engine.connect() as conn:
        ids = outbox.emit_many(conn, [_event(1), _event(2, "other")])
        conn.commit()
        outbox.emit(conn, _event(3))
        conn.rollback()
    engine.dispose()
    assert [r[0] for r in rows(db_url, "SELECT event_id FROM hexa_outbox ORDER BY id")] == ids


async def test_async_session_and_connection(db_url: str) -> None:
    outbox = Outbox()
    engine = create_async_engine(async_url(db_url))
    try:
        async with AsyncSession(engine) as session, session.begin():
            a = await outbox.emit_async(session, _event(1))
        async with engine.connect() as conn:
            b = await outbox.emit_async(conn, _event(2))
            await conn.commit()
            await outbox.emit_async(conn, _event(3))
            await conn.rollback()
        async with engine.connect() as conn:
            got = (await conn.execute(select(outbox_table.c.event_id))).scalars().all()
    finally:
        await engine.dispose()
    assert sorted(got) == sorted([a, b])


def test_wrong_flavour_is_a_type_error(db_url: str) -> None:
    outbox = Outbox()
    engine = create_async_engine(async_url(db_url))
    with pytest.raises(TypeError, match="emit_async"):
        outbox.emit(AsyncSession(engine), _event(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Session or Connection"):
        outbox.emit(object(), _event(1))  # type: ignore[arg-type]


async def test_emit_async_rejects_sync_session(db_url: str) -> None:
    engine = create_engine(sync_url(db_url))
    with Session(engine) as session, pytest.raises(TypeError, match="emit\\(\\)"):
        await Outbox().emit_async(session, _event(1))  # type: ignore[arg-type]
    engine.dispose()


async def test_migrate_is_idempotent(db_url: str) -> None:
    migrate(db_url)
    await migrate_async(db_url)
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite", "mysql"])
def test_ddl(dialect: str) -> None:
    text = ddl(dialect)
    assert "CREATE TABLE hexa_outbox" in text
    assert text.count("CREATE INDEX") == 4


def test_urls_never_show_passwords() -> None:
    from hexa_event._sql.urls import redact

    assert "s3cret" not in redact("postgresql://u:s3cret@h/db")
    assert make_url(async_url("postgresql://u@h/db")).drivername == "postgresql+asyncpg"
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
