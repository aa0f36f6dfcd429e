"""Creating tables idempotently (``CREATE ... IF NOT EXISTS`` semantics) from any bind."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData, Table, create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import engine_for
from .urls import sync_url


def create_tables(md: MetaData, tables: Sequence[Table], bind: Engine | Connection | str) -> None:
    """Create ``tables`` and their indexes if missing; a URL gets a blocking DBAPI."""
    if isinstance(bind, str):
        engine = create_engine(sync_url(bind))
        try:
            md.create_all(engine, tables=list(tables), checkfirst=True)
        finally:
            engine.dispose()
        return
    md.create_all(bind, tables=list(tables), checkfirst=True)


async def create_tables_async(
    md: MetaData, tables: Sequence[Table], bind: AsyncEngine | AsyncConnection | str
) -> None:
    """:func:`create_tables` for an async engine or connection, or a URL (asyncio DBAPI)."""

    def create(sync_conn: Connection) -> None:
        md.create_all(sync_conn, tables=list(tables), checkfirst=True)

    if isinstance(bind, AsyncConnection):
        await bind.run_sync(create)
        return
    engine, owned = engine_for(bind)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(create)
    finally:
        if owned:
            await engine.dispose()
