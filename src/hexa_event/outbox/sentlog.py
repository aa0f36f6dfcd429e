"""The sent log: what marking rows sent writes, and what the cleaner and the status read.

A relayed row is deleted from the outbox in the transaction that settles its batch, and one
row per batch goes into the sent log (``hexa_outbox_sent``: sent time, first and last row
id, row count, event ids). A delete writes no new row version and no index entry, where
setting ``sent_at`` wrote both (it moves the row out of the partial indexes of unsent rows,
so the update cannot be HOT): that update was the relay's largest database cost.

An outbox made by an older version has no sent log until ``migrate`` runs again; meanwhile
relays mark rows by setting ``sent_at`` as before (:func:`has_sent_log` tells which), and
the cleaner and the status read both.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    Table,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._sql.cleaner import CUTOFF, LIMIT
from ..errors import ConfigurationError
from .store import sent_table

log = logging.getLogger(__name__)

TIMESTAMP = DateTime(timezone=True)
"""The type of the outbox's timestamps (and of the ``:now``/``:until`` parameters)."""
_COLUMNS = ("sent_at", "first_id", "last_id", "row_count", "event_ids")


def ids_match(table: Table, postgres: bool) -> Any:
    """``id`` among the bound ``ids`` (an array on PostgreSQL: one parameter whatever the
    batch size; an expanding IN list elsewhere)."""
    if postgres:
        return table.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    return table.c.id.in_(bindparam("ids", expanding=True))


def mark_statements(table: Table, how: str, *, postgres: bool, unsent_only: bool) -> list[Any]:
    """The statements (one transaction) that settle the published rows ``:ids`` at
    ``:now``.

    ``how``: ``"log"`` deletes them and writes their batch's line into the sent log,
    ``"delete"`` only deletes them (``keep_sent=False``), ``"update"`` sets ``sent_at``
    (an outbox without a sent log). ``unsent_only``: touch only rows still unsent (lease
    mode, where another relay may have settled them after the lease ended).
    """
    t = table
    match = ids_match(t, postgres)
    where = (match, t.c.sent_at.is_(None)) if unsent_only else (match,)
    now = bindparam("now", type_=TIMESTAMP)
    if how == "update":
        values: dict[str, Any] = {"sent_at": now, "lease_until": None, "last_error": None}
        if not unsent_only:  # lock mode: the claim did not count the attempt
            values["attempts"] = t.c.attempts + 1
        return [update(t).where(*where).values(values)]
    if how == "delete":
        return [delete(t).where(*where)]
    sent = sent_table(t)
    if postgres:
        # One statement: the rows the delete removed are the ones logged.
        gone = delete(t).where(*where).returning(t.c.id, t.c.event_id).cte("gone")
        ids = func.string_agg(gone.c.event_id, aggregate_order_by(literal(" "), gone.c.id))
        line = select(
            cast(now, TIMESTAMP), func.min(gone.c.id), func.max(gone.c.id), func.count(), ids
        ).having(func.count() > 0)
        return [insert(sent).from_select(_COLUMNS, line)]
    # SQLite serialises writers: the rows read here are the rows deleted next.
    rows = select(t.c.id, t.c.event_id).where(*where).order_by(t.c.id).subquery()
    line = select(
        now,
        func.min(rows.c.id),
        func.max(rows.c.id),
        func.count(),
        func.group_concat(rows.c.event_id, " "),
    ).having(func.count() > 0)
    return [insert(sent).from_select(_COLUMNS, line), delete(t).where(*where)]


def _exists(conn: Connection, table: Table) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(table.name, schema=table.schema))


async def has_sent_log(db: AsyncEngine | AsyncConnection, table: Table) -> bool:
    """Whether the sent log of ``table`` exists (``migrate`` creates it); False too for a
    ``Table`` built by hand, which has none in its metadata."""
    try:
        sent = sent_table(table)
    except ConfigurationError:
        return False
    if isinstance(db, AsyncConnection):
        return await db.run_sync(_exists, sent)
    async with db.connect() as conn:
        return await conn.run_sync(_exists, sent)


def clean_statement(table: Table) -> Any:
    """Deletes at most ``:limit`` lines of the sent log older than ``:cutoff``, returning
    the row count of each (the cleaner reports outbox rows, not log lines)."""
    sent = sent_table(table)
    expired = (
        select(sent.c.sent_at, sent.c.first_id)
        .where(sent.c.sent_at < CUTOFF)
        .order_by(sent.c.sent_at)
        .limit(LIMIT)
    )
    key = tuple_(sent.c.sent_at, sent.c.first_id)
    return delete(sent).where(key.in_(expired)).returning(sent.c.row_count)


async def sent_since(
    conn: AsyncConnection, table: Table, since: datetime, *, log_exists: bool
) -> tuple[int, bool]:
    """Rows of ``table`` sent at or after ``since``, and whether any row was ever recorded
    sent (rows marked in place, by an older relay, and lines of the sent log)."""
    t = table
    recent = (await conn.execute(select(func.count()).where(t.c.sent_at >= since))).scalar_one()
    ever = (await conn.execute(select(exists().where(t.c.sent_at.is_not(None))))).scalar_one()
    if log_exists:
        sent = sent_table(t)
        logged = (
            await conn.execute(
                select(func.coalesce(func.sum(sent.c.row_count), 0)).where(sent.c.sent_at >= since)
            )
        ).scalar_one()
        recent += int(logged)
        ever = ever or (await conn.execute(select(exists().select_from(sent)))).scalar_one()
    return int(recent), bool(ever)
