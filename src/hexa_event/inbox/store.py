"""The inbox table: one row per (event id, handler action) whose effects are committed.

The key is Go hexa-event's dedup pair: ``HEXA_ROOT_EVENT_ID`` (falling back to
``HEXA_EVENT_ID``) and ``HEXA_ROOT_EVENT_HANDLER_ACTION_NAME`` (falling back to
``HEXA_EVENT_HANDLER_ACTION_NAME``), so a retry copy is recognised as its root event.
"""

from __future__ import annotations

import functools
import hashlib

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._sql.dialects import tables_ddl
from .._sql.names import (
    TableNames,
    check_table_dialect,
    chosen_table,
    dialect_of,
    table_names,
)
from .._sql.schema import create_tables, create_tables_async
from ..context import Context
from ..errors import ConfigurationError

TABLE = "hexa_inbox"
"""The inbox table's name before any ``table_prefix``."""
DERIVED_NAMES = (TABLE, f"pk_{TABLE}", f"ix_{TABLE}_processed_at")
"""Every name derived from the table's (PostgreSQL's 63-byte limit once prefixed)."""
KEY_LENGTH = 255
"""The length of the inbox's ``event_id`` and ``action`` columns."""


def _build(md: MetaData, names: TableNames) -> Table:
    name = names.table(TABLE)
    table = Table(
        name,
        md,
        Column("event_id", String(KEY_LENGTH), nullable=False),
        Column("action", String(KEY_LENGTH), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("event_id", "action", name=f"pk_{name}"),
        schema=names.schema,
    )
    Index(f"ix_{name}_processed_at", table.c.processed_at)
    return table


metadata = MetaData()
"""The metadata holding :data:`inbox_table`."""

inbox_table = _build(metadata, TableNames())
"""``hexa_inbox``: (event id, action) of every handled event, with when it was handled.
The default table set; :func:`table_for` gives the one of a schema or prefix."""


def names_for(schema: str | None, table_prefix: str | None, *, owner: str) -> TableNames:
    """Checked :class:`TableNames` of an inbox table; :class:`ConfigurationError` naming
    ``owner``'s option and what to change otherwise."""
    return table_names(schema, table_prefix, owner=owner, derived=DERIVED_NAMES)


@functools.lru_cache(maxsize=64)
def _table_for(names: TableNames) -> Table:
    return inbox_table if names.default else _build(MetaData(), names)


def table_for(schema: str | None = None, table_prefix: str = "") -> Table:
    """The inbox table in PostgreSQL ``schema`` and/or named ``<table_prefix>hexa_inbox``
    (its key and index follow), built once per pair; :data:`inbox_table` for neither.
    Names: lowercase letters, digits and ``_``."""
    return _named_table(schema, table_prefix, "inbox")


def resolve_table(
    table: Table | None, schema: str | None, table_prefix: str | None, *, owner: str
) -> Table:
    """``table`` as given, or the one of ``schema``/``table_prefix`` (not both)."""
    return chosen_table(table, schema, table_prefix, owner=owner, table_for=_named_table)


def _named_table(schema: str | None, table_prefix: str | None, owner: str) -> Table:
    return _table_for(names_for(schema, table_prefix, owner=owner))


def dedup_key(ctx: Context) -> tuple[str, str]:
    """(root event id or event id, root action or action) of a handler's context.

    Raises :class:`~hexa_event.errors.ConfigurationError` when the context carries no event
    id or action (it was not filled by a receiver).
    """
    event_id = ctx.root_event_id or ctx.event_id
    action = ctx.root_handler_action or ctx.handler_action
    if not event_id or not action:
        raise ConfigurationError(
            "the inbox needs the context a receiver hands to handlers (its event id and "
            "handler action are empty); call it from a subscribed handler"
        )
    return event_id, action


def fit_key(value: str) -> str:
    """``value``, or its SHA-256 (``sha256:`` and 64 hex digits) when the columns cannot
    hold it: longer than :data:`KEY_LENGTH` characters, or with a NUL (which PostgreSQL's
    text refuses), as a foreign producer's id may be."""
    if len(value) <= KEY_LENGTH and "\x00" not in value:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def ddl(dialect: str = "postgresql", *, schema: str | None = None, table_prefix: str = "") -> str:
    """The DDL :func:`migrate` runs for the inbox, as SQL text for ``dialect``."""
    table = table_for(schema, table_prefix)
    check_table_dialect(table, dialect, owner="inbox ddl()")
    return tables_ddl([table], dialect)


def migrate(
    bind: Engine | Connection | str, *, schema: str | None = None, table_prefix: str = ""
) -> None:
    """Create the inbox table and its index if they do not exist (idempotent; a missing
    ``schema`` is created). ``schema`` / ``table_prefix``: see :func:`table_for`."""
    table = table_for(schema, table_prefix)
    check_table_dialect(table, dialect_of(bind), owner="inbox migrate()")
    create_tables(table.metadata, [table], bind)


async def migrate_async(
    bind: AsyncEngine | AsyncConnection | str,
    *,
    schema: str | None = None,
    table_prefix: str = "",
) -> None:
    """:func:`migrate` for an ``AsyncEngine``/``AsyncConnection`` or a URL."""
    table = table_for(schema, table_prefix)
    check_table_dialect(table, dialect_of(bind), owner="inbox migrate()")
    await create_tables_async(table.metadata, [table], bind)
