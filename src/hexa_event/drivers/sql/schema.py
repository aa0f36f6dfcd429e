"""The SQL driver's tables (what each holds: docs/engines/sql.md, "Internals"), the
migration that creates them (:func:`migrate`, :func:`ddl`), and engine construction."""

from __future__ import annotations

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
    text,
)
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ..._sql import urls
from ..._sql.dialects import tables_ddl
from ..._sql.engine import begin_write, log_engine
from ..._sql.names import TableNames
from ..._sql.schema import create_schemas
from ...errors import ConfigurationError
from .options import SqlOptions, names_for

_MIGRATION_LOCK = 7_341_000_451  # pg advisory lock key for concurrent migrations


def _group_partition() -> tuple[Column[str], Column[str], Column[int]]:
    """The key columns of a group's rows per partition: group, channel, partition."""
    return (
        Column("group_name", String(255), nullable=False),
        Column("channel", String(255), nullable=False),
        Column("part", SmallInteger, nullable=False),
    )


def metadata(dialect: str, *, schema: str | None = None, table_prefix: str = "") -> MetaData:
    """The driver's tables for ``dialect`` (``"sqlite"`` or ``"postgresql"``), in ``schema``
    and with ``table_prefix``."""
    names = names_for(schema, table_prefix, dialect)
    pg = dialect == "postgresql"
    md = MetaData(schema=names.schema)
    n = names.table
    # PostgreSQL: the inserting transaction's id (xid8 as bigint); SQLite has one writer at
    # a time, so ids follow commit order and txid stays 0.
    txid_default = text("(pg_current_xact_id()::text)::bigint") if pg else text("0")
    log_index = ("channel", "part", "txid", "id") if pg else ("channel", "part", "id")
    Table(
        n("hexa_log"),
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
        Index(n("hexa_log_by_partition"), *log_index),
        sqlite_autoincrement=True,
    )
    Table(
        n("hexa_channels"),
        md,
        Column("channel", String(255), primary_key=True),
        Column("created_ms", BigInteger, nullable=False),
    )
    Table(
        n("hexa_positions"),
        md,
        *_group_partition(),
        Column("pos_tx", BigInteger, nullable=False),
        Column("pos_id", BigInteger, nullable=False),
        Column("owner", String(64), nullable=True),
        Column("lease_until_ms", BigInteger, nullable=False, server_default=text("0")),
        PrimaryKeyConstraint("group_name", "channel", "part"),
        Index(n("hexa_positions_by_owner"), "group_name", "owner"),
    )
    Table(
        n("hexa_members"),
        md,
        Column("group_name", String(255), nullable=False),
        Column("channel", String(255), nullable=False),
        Column("member_id", String(64), nullable=False),
        Column("expires_ms", BigInteger, nullable=False),
        PrimaryKeyConstraint("group_name", "channel", "member_id"),
    )
    Table(
        n("hexa_redeliveries"),
        md,
        Column("group_name", String(255), nullable=False),
        Column("log_id", BigInteger, nullable=False),
        Column("channel", String(255), nullable=False),
        Column("part", SmallInteger, nullable=False),
        Column("visible_ms", BigInteger, nullable=False),
        Column("attempts", Integer, nullable=False),
        PrimaryKeyConstraint("group_name", "log_id"),
        Index(n("hexa_redeliveries_due"), "group_name", "visible_ms"),
    )
    Table(
        n("hexa_acked"),
        md,
        *_group_partition(),
        Column("log_id", BigInteger, nullable=False),
        Column("txid", BigInteger, nullable=False),
        PrimaryKeyConstraint("group_name", "channel", "part", "log_id"),
    )
    Table(
        n("hexa_meta"),
        md,
        Column("name", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
    )
    return md


def ddl(dialect: str = "postgresql", *, schema: str | None = None, table_prefix: str = "") -> str:
    """The DDL that :func:`migrate` runs, as text, for ``"postgresql"`` or ``"sqlite"``
    (``schema``/``table_prefix`` as in :class:`~hexa_event.drivers.sql.SqlOptions`)."""
    if dialect not in ("postgresql", "sqlite"):
        raise ConfigurationError(
            f"ddl(): dialect must be 'postgresql' or 'sqlite', not {dialect!r}"
        )
    md = metadata(dialect, schema=schema, table_prefix=table_prefix)
    return tables_ddl(md.sorted_tables, dialect)


def async_url(url: str | URL) -> URL:
    """``url`` with an asyncio DBAPI: sqlite -> aiosqlite, postgresql/postgres -> asyncpg;
    :class:`ConfigurationError` for other databases and in-memory SQLite."""
    parsed = urls.async_url(url)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"SQL driver: unsupported database {parsed.get_backend_name()!r}; use "
            "sqlite:///path.db or postgresql://user@host:5432/db"
        )
    if urls.in_memory_sqlite(parsed):
        raise ConfigurationError(
            "SQL driver: an in-memory SQLite database is private to each connection; "
            "use a file (sqlite:///data/app.db) or the memory:// driver"
        )
    return parsed


def sqlite_file(url: str) -> str | None:
    """The file a SQLite ``url`` names (None: not SQLite, or a ``file:`` URI filename)."""
    parsed = async_url(url)
    path = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or path.startswith("file:"):
        return None
    return path


def make_engine(options: SqlOptions) -> AsyncEngine:
    """An async engine for ``options.url`` (see :func:`hexa_event._sql.engine.log_engine`)."""
    return log_engine(
        async_url(options.url),
        pool_size=options.pool_size,
        busy_timeout=options.busy_timeout,
        synchronous=options.sqlite_synchronous,
        options=dict(options.engine_options),
    )


def _create(sync_conn: Connection, partitions: int, names: TableNames) -> int:
    if sync_conn.dialect.name == "postgresql":  # one migration at a time
        sync_conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
    md = metadata(sync_conn.dialect.name, schema=names.schema, table_prefix=names.prefix)
    create_schemas(sync_conn, md.sorted_tables)
    md.create_all(sync_conn, checkfirst=True)
    meta = md.tables[names.qualified("hexa_meta")]
    row = sync_conn.execute(meta.select().where(meta.c.name == "partitions")).first()
    if row is None:
        sync_conn.execute(meta.insert().values(name="partitions", value=str(partitions)))
        return partitions
    return int(row.value)


async def migrate_async(engine: AsyncEngine, *, partitions: int, names: TableNames) -> int:
    """Create the tables (``names``: checked schema and prefix) if missing; return the
    stored partition count."""
    async with engine.connect() as conn:
        await begin_write(conn)
        stored = await conn.run_sync(_create, partitions, names)
        await conn.commit()
    return stored


async def migrate(
    target: str | AsyncEngine | Engine,
    *,
    partitions: int = 16,
    schema: str | None = None,
    table_prefix: str = "",
) -> int:
    """Create the SQL driver's tables (idempotent; concurrent runs are safe).

    ``target`` is a URL (``sqlite:///app.db``, ``postgresql://user@host/db``, which may
    carry ``?schema=...&table_prefix=...``), an async engine, or a sync engine.
    ``partitions`` only applies when the tables are created; the stored value is returned.
    ``schema``/``table_prefix``: as in :class:`~hexa_event.drivers.sql.SqlOptions` (a
    missing schema is created). Equivalent DDL: :func:`ddl`.
    """
    if isinstance(target, AsyncEngine):
        names = names_for(schema, table_prefix, target.dialect.name)
        return await migrate_async(target, partitions=partitions, names=names)
    if isinstance(target, Engine):
        names = names_for(schema, table_prefix, target.dialect.name)
        with target.connect() as conn:
            stored = _create(conn, partitions, names)
            conn.commit()
        return stored
    options = SqlOptions(url=str(target), schema=schema, table_prefix=table_prefix)
    engine = make_engine(options)
    try:
        return await migrate_async(engine, partitions=partitions, names=options.names)
    finally:
        await engine.dispose()
