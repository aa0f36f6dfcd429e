"""Async engines: creation for a URL, SQLite's connection set-up, the write transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import ConfigurationError
from .urls import async_url, check_query


def engine_for(db: str | URL | AsyncEngine, **options: Any) -> tuple[AsyncEngine, bool]:
    """An engine for ``db`` and whether we created it (and so must dispose of it).

    ``db`` is an engine (the caller's: returned as is) or a URL (an asyncio DBAPI is
    chosen; PostgreSQL engines check connections before use; query options other than the
    database driver's are refused).
    """
    if isinstance(db, AsyncEngine):
        return db, False
    if isinstance(db, Engine | Connection | AsyncConnection):
        raise ConfigurationError(
            f"got a {type(db).__name__}; this needs an AsyncEngine "
            "(sqlalchemy.ext.asyncio.create_async_engine(...)) or a database URL such as "
            "'postgresql://user@host/db' or 'sqlite:///app.db'"
        )
    url = async_url(db)
    check_query(
        url,
        owner="database URL",
        ours="schema and table_prefix are keyword arguments here, e.g. table_prefix='billing_'",
    )
    if url.get_backend_name() == "postgresql":
        options.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **options), True


def log_engine(
    url: URL,
    *,
    pool_size: int,
    busy_timeout: float,
    synchronous: str,
    options: dict[str, Any],
) -> AsyncEngine:
    """The SQL driver's engine: a pool of ``pool_size`` (PostgreSQL may overflow as much
    again, checks a connection before use, and fails connecting after 10 s); SQLite gets
    WAL, the busy timeout, manual ``BEGIN`` and its folder created (no check before use: a
    file's connection does not go stale, and the check cost four calls to the connection's
    thread per use). ``options`` go to ``create_async_engine`` last."""
    kwargs: dict[str, Any] = {"pool_size": pool_size}
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["max_overflow"] = pool_size
        if url.get_driver_name() == "asyncpg":
            # Fail fast while the server restarts instead of asyncpg's 60 s default.
            kwargs["connect_args"] = {"timeout": 10}
    kwargs.update(options)
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        prepare_sqlite(engine, busy_timeout, synchronous)
    return engine


def prepare_sqlite(engine: AsyncEngine, busy_timeout: float, synchronous: str = "NORMAL") -> None:
    """Set WAL, the busy timeout and DBAPI autocommit on every new SQLite connection.

    Reads are then single statements and writers start their own ``BEGIN IMMEDIATE``
    (:func:`begin_write`).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()


async def begin_write(conn: AsyncConnection) -> None:
    """Start a write transaction on ``conn``: ``BEGIN IMMEDIATE`` on SQLite (take the one
    writer lock now, never upgrade a read lock mid-transaction); nothing elsewhere."""
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def let_go(conn: AsyncConnection, *, wait: float) -> None:
    """Give ``conn`` back, waiting at most ``wait`` seconds for the database (its rollback),
    then dropping it unheard (invalidated: closed at the socket, within SQLAlchemy's 2 s for
    a goodbye). A database that does not answer (its host hangs) kept a graceful close, and
    whatever awaited it, waiting for good; a cancelled task gives ``wait=0``."""
    if conn.closed:
        return
    if wait > 0:
        try:
            await asyncio.wait_for(conn.close(), wait)
            return
        except Exception:
            pass
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


async def dispose_within(engine: AsyncEngine, wait: float) -> bool:
    """Dispose of ``engine``'s pool, giving the database ``wait`` seconds to see its
    connections closed; past that they are dropped unclosed (the operating system closes
    their sockets when they are collected). Returns whether it was done in time."""
    try:
        await asyncio.wait_for(engine.dispose(), wait)
        return True
    except Exception:
        await engine.dispose(close=False)
        return False


GOODBYE_WAIT = 5.0
"""Seconds a connection's rollback or close may take after a failed statement before the
connection is dropped unheard (:func:`let_go`)."""


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()``, except how it lets go: a transaction cancelled (its caller gave
    up on a database that does not answer) drops its connection at once instead of waiting
    for the rollback, and a failed one waits :data:`GOODBYE_WAIT` seconds at most."""
    conn = await engine.connect()
    try:
        await conn.begin()
        yield conn
        await conn.commit()
    except BaseException as exc:
        await let_go(conn, wait=GOODBYE_WAIT if isinstance(exc, Exception) else 0)
        raise
    await let_go(conn, wait=GOODBYE_WAIT)
