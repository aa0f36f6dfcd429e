"""Creating tables idempotently (``CREATE ... IF NOT EXISTS`` semantics) from any bind.

Tables in a PostgreSQL schema get the schema created first (``CREATE SCHEMA IF NOT
EXISTS``, which needs the CREATE right on the database; create it yourself otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData, Table, create_engine, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateSchema

from .engine import engine_for
from .urls import sync_url


def create_schemas(conn: Connection, tables: Sequence[Table]) -> None:
    """Create the schemas of ``tables`` that do not exist (PostgreSQL; a no-op without)."""
    schemas = sorted({t.schema for t in tables if t.schema is not None})
    if not schemas or conn.dialect.name != "postgresql":
        return
    existing = set(inspect(conn).get_schema_names())
    for schema in schemas:
        if schema in existing:
            continue
        try:
            # A savepoint: two first migrations at once may both try (IF NOT EXISTS is not
            # atomic in PostgreSQL); the loser's error must not abort the transaction.
            with conn.begin_nested():
                conn.execute(CreateSchema(schema, if_not_exists=True))
        except DBAPIError:
            if schema not in inspect(conn).get_schema_names():
                raise


def create_tables(md: MetaData, tables: Sequence[Table], bind: Engine | Connection | str) -> None:
    """Create ``tables`` and their indexes if missing; a URL gets a blocking DBAPI."""
    if isinstance(bind, str):
        engine = create_engine(sync_url(bind))
        try:
            with engine.begin() as conn:
                _create(conn, md, tables)
        finally:
            engine.dispose()
        return
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            _create(conn, md, tables)
        return
    _create(bind, md, tables)


async def create_tables_async(
    md: MetaData, tables: Sequence[Table], bind: AsyncEngine | AsyncConnection | str
) -> None:
    """:func:`create_tables` for an async engine or connection, or a URL (asyncio DBAPI)."""

    def create(sync_conn: Connection) -> None:
        _create(sync_conn, md, tables)

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


def _create(conn: Connection, md: MetaData, tables: Sequence[Table]) -> None:
    create_schemas(conn, tables)
    md.create_all(conn, tables=list(tables), checkfirst=True)
