"""The SQL driver's tables, the migration that creates them, and engine construction.

Tables (all prefixed ``hexa_``):

- ``hexa_log``: the append-only event log. ``id`` is an autoincrement id; on PostgreSQL
  ``txid`` holds the inserting transaction's id (``pg_current_xact_id()``) so readers can
  order by ``(txid, id)`` and stop below the oldest running transaction: a transaction that
  got an id early and commits late is never skipped (see the driver's docstring).
  ``part`` is the key's virtual partition, ``visible_ms`` the not-before time of retry copies.
- ``hexa_channels``: every channel published or provisioned (pattern subscriptions match it).
- ``hexa_positions``: per (group, channel, partition) the stored position and the lease
  (``owner``, ``lease_until_ms``) of the group member that consumes it.
- ``hexa_members``: live members of each group per channel (heartbeats), for fair shares.
- ``hexa_redeliveries``: records a group gave back with ``nack(delay)``, due at ``visible_ms``.
- ``hexa_meta``: settings fixed at creation (``partitions``).

Create them with :func:`migrate` (idempotent, safe to run from several processes at once) or
print :func:`ddl` and run it with your own migration tool.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from ...errors import ConfigurationError

if TYPE_CHECKING:
    from .options import SqlOptions

logger = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 16
_MIGRATION_LOCK = 7_341_000_451  # pg advisory lock key for concurrent migrations

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def metadata(dialect: str) -> MetaData:
    """The driver's tables for ``dialect`` (``"sqlite"`` or ``"postgresql"``)."""
    pg = dialect == "postgresql"
    md = MetaData()
    # PostgreSQL: the inserting transaction's id (xid8 as bigint); SQLite has one writer at
    # a time, so ids follow commit order and txid stays 0.
    txid_default = text("(pg_current_xact_id()::text)::bigint") if pg else text("0")
    log_index = ("channel", "part", "txid", "id") if pg else ("channel", "part", "id")
    Table(
        "hexa_log",
        md,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("txid", BigInteger, nullable=False, server_default=txid_default),
        Column("channel", String(255), nullable=False),
        Column("part", SmallInteger, nullable=False),
        Column("msg_key", Text, nullable=False),
        Column("headers", LargeBinary, nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_ms", BigInteger, nullable=False),
        Column("visible_ms", BigInteger, nullable=False, server_default=text("0")),
        Index("hexa_log_by_partition", *log_index),
        sqlite_autoincrement=True,
    )
    Table(
        "hexa_channels",
        md,
        Column("channel", String(255), primary_key=True),
        Column("created_ms", BigInteger, nullable=False),
    )
    Table(
        "hexa_positions",
        md,
        Column("group_name", String(255), nullable=False),
        Column("channel", String(255), nullable=False),
        Column("part", SmallInteger, nullable=False),
        Column("pos_tx", BigInteger, nullable=False),
        Column("pos_id", BigInteger, nullable=False),
        Column("owner", String(64), nullable=True),
        Column("lease_until_ms", BigInteger, nullable=False, server_default=text("0")),
        PrimaryKeyConstraint("group_name", "channel", "part"),
        Index("hexa_positions_by_owner", "group_name", "owner"),
    )
    Table(
        "hexa_members",
        md,
        Column("group_name", String(255), nullable=False),
        Column("channel", String(255), nullable=False),
        Column("member_id", String(64), nullable=False),
        Column("expires_ms", BigInteger, nullable=False),
        PrimaryKeyConstraint("group_name", "channel", "member_id"),
    )
    Table(
        "hexa_redeliveries",
        md,
        Column("group_name", String(255), nullable=False),
        Column("log_id", BigInteger, nullable=False),
        Column("channel", String(255), nullable=False),
        Column("part", SmallInteger, nullable=False),
        Column("visible_ms", BigInteger, nullable=False),
        Column("attempts", Integer, nullable=False),
        PrimaryKeyConstraint("group_name", "log_id"),
        Index("hexa_redeliveries_due", "group_name", "visible_ms"),
    )
    Table(
        "hexa_meta",
        md,
        Column("name", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
    )
    return md


def ddl(dialect: str = "postgresql") -> str:
    """The DDL that :func:`migrate` runs, as text, for ``"postgresql"`` or ``"sqlite"``."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

        compiled_for: Any = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

        compiled_for = SQLiteDialect_aiosqlite()
    else:
        raise ConfigurationError(
            f"ddl(): dialect must be 'postgresql' or 'sqlite', not {dialect!r}"
        )
    statements: list[str] = []
    for table in metadata(dialect).sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=compiled_for)).strip() + ";")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            statements.append(str(CreateIndex(index).compile(dialect=compiled_for)).strip() + ";")
    return "\n\n".join(statements) + "\n"


def async_url(url: str | URL) -> URL:
    """``url`` with an asyncio DBAPI: sqlite -> aiosqlite, postgresql/postgres -> asyncpg."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise ConfigurationError(
            "SQL driver: cannot parse the database URL; expected sqlite:///path.db or "
            "postgresql://user@host:5432/db"
        ) from exc
    target = _ASYNC_DRIVERS.get(parsed.drivername)
    if target is None:
        raise ConfigurationError(
            f"SQL driver: unsupported database {parsed.drivername!r}; use sqlite:///path.db "
            "or postgresql://user@host:5432/db"
        )
    parsed = parsed.set(drivername=target)
    memory = not parsed.database or parsed.database == ":memory:" or "mode=memory" in str(parsed)
    if target.startswith("sqlite") and memory:
        raise ConfigurationError(
            "SQL driver: an in-memory SQLite database is private to each connection; "
            "use a file (sqlite:///data/app.db) or the memory:// driver"
        )
    return parsed


def make_engine(options: SqlOptions) -> AsyncEngine:
    """An async engine for ``options.url``; SQLite gets WAL, a busy timeout and manual BEGIN.

    SQLite connections run in autocommit mode at the DBAPI level: reads are single
    statements, and writers start their own ``BEGIN IMMEDIATE`` (see :func:`begin_write`).
    A relative SQLite path's folder is created when missing.
    """
    url = async_url(options.url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["pool_size"] = options.pool_size
    else:
        kwargs["pool_size"] = options.pool_size
        kwargs["max_overflow"] = options.pool_size
        if url.get_driver_name() == "asyncpg":
            # Fail fast while the server restarts instead of asyncpg's 60 s default.
            kwargs["connect_args"] = {"timeout": 10}
    kwargs.update(options.engine_options)
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        prepare_sqlite(engine, options.busy_timeout, options.sqlite_synchronous)
    return engine


def prepare_sqlite(engine: AsyncEngine, busy_timeout: float, synchronous: str = "NORMAL") -> None:
    """Set WAL, the busy timeout and DBAPI autocommit on every new SQLite connection."""

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


def _create(sync_conn: Connection, partitions: int) -> int:
    md = metadata(sync_conn.dialect.name)
    md.create_all(sync_conn, checkfirst=True)
    meta = md.tables["hexa_meta"]
    row = sync_conn.execute(meta.select().where(meta.c.name == "partitions")).first()
    if row is None:
        sync_conn.execute(meta.insert().values(name="partitions", value=str(partitions)))
        return partitions
    return int(row.value)


async def migrate_async(engine: AsyncEngine, *, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Create the tables if missing; return the stored partition count."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        else:
            await begin_write(conn)
        stored = await conn.run_sync(_create, partitions)
        await conn.commit()
    return stored


async def migrate(
    target: str | AsyncEngine | Engine, *, partitions: int = DEFAULT_PARTITIONS
) -> int:
    """Create the SQL driver's tables (idempotent; concurrent runs are safe).

    ``target`` is a URL (``sqlite:///app.db``, ``postgresql://user@host/db``), an async
    engine, or a sync engine. ``partitions`` only applies when the tables are created; the
    stored value is returned. Equivalent DDL: :func:`ddl`.
    """
    if isinstance(target, AsyncEngine):
        return await migrate_async(target, partitions=partitions)
    if isinstance(target, Engine):
        with target.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            stored = _create(conn, partitions)
            conn.commit()
        return stored
    from .options import SqlOptions

    engine = make_engine(SqlOptions(url=str(target)))
    try:
        return await migrate_async(engine, partitions=partitions)
    finally:
        await engine.dispose()
