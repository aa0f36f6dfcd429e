"""The inbox table: one row per (event id, handler action) whose effects are committed.

The key is Go hexa-event's dedup pair: ``HEXA_ROOT_EVENT_ID`` (falling back to
``HEXA_EVENT_ID``) and ``HEXA_ROOT_EVENT_HANDLER_ACTION_NAME`` (falling back to
``HEXA_EVENT_HANDLER_ACTION_NAME``), so a retry copy is recognised as its root event.
"""

from __future__ import annotations

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
from .._sql.schema import create_tables, create_tables_async
from ..context import Context
from ..errors import ConfigurationError

metadata = MetaData()
"""The metadata holding :data:`inbox_table`."""

inbox_table = Table(
    "hexa_inbox",
    metadata,
    Column("event_id", String(255), nullable=False),
    Column("action", String(255), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("event_id", "action", name="pk_hexa_inbox"),
)
"""``hexa_inbox``: (event id, action) of every handled event, with when it was handled."""

Index("ix_hexa_inbox_processed_at", inbox_table.c.processed_at)


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


def ddl(dialect: str = "postgresql") -> str:
    """The DDL :func:`migrate` runs for the inbox, as SQL text for ``dialect``."""
    return tables_ddl([inbox_table], dialect)


def migrate(bind: Engine | Connection | str) -> None:
    """Create ``hexa_inbox`` and its index if they do not exist (idempotent)."""
    create_tables(metadata, [inbox_table], bind)


async def migrate_async(bind: AsyncEngine | AsyncConnection | str) -> None:
    """:func:`migrate` for an ``AsyncEngine``/``AsyncConnection`` or a URL."""
    await create_tables_async(metadata, [inbox_table], bind)
