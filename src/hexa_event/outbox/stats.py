"""What the outbox holds, read with bounded queries: the backlog and the age of its oldest
unsent row (:func:`outbox_stats`), and whether any row is ready to claim
(:func:`any_ready`, what a draining relay asks between batches: one row, not a count)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .._sql.clock import as_utc, utcnow
from ..numbers import check_number
from .claims import PARKED
from .store import outbox_table

BACKLOG_LIMIT = 100_000
"""Unsent rows a relay's :meth:`~hexa_event.outbox.OutboxRelay.stats` counts at most
(``backlog_limit``)."""
MAX_LIMIT = 2**31 - 1
"""The largest row limit: PostgreSQL binds a LIMIT as a 32-bit integer."""


def check_limit(what: str, limit: object) -> None:
    """Refuse a row limit that is not a whole number from 1 to :data:`MAX_LIMIT`."""
    check_number(what, limit, minimum=1, maximum=MAX_LIMIT, integer=True)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot of the outbox and of this relay."""

    backlog: int
    """Unsent rows in the table (any relay's)."""
    oldest_unsent_age: float | None
    """Seconds since the oldest unsent row was created; None when nothing is unsent."""
    in_flight: int
    """Rows this relay has claimed and not yet settled."""
    published: int
    """Rows this relay marked sent since it started."""
    failed_batches: int
    """Batches whose publish failed (their rows are retried after ``retry_delay``)."""
    parked: int = 0
    """Rows parked because the target refused them for good (not in ``backlog``)."""
    backlog_at_least: bool = False
    """The count stopped at its limit (the relay's ``backlog_limit``): there are at least
    ``backlog`` unsent rows, maybe many more."""


async def outbox_stats(
    db: AsyncEngine,
    table: Table = outbox_table,
    *,
    in_flight: int = 0,
    published: int = 0,
    failed_batches: int = 0,
    limit: int | None = None,
) -> OutboxStats:
    """Backlog and the age of the oldest unsent row of ``table``.

    ``limit``: read only the first ``limit`` unsent rows in id order (the index the relay
    claims by), whatever the backlog: ``backlog`` is then at most ``limit`` and
    ``backlog_at_least`` says when there are more, and the oldest row is sought among those
    (the earliest rows, barring a transaction that committed late). None reads every unsent
    row: exact, and seconds of work on a backlog of millions. A ``limit`` that is not a
    whole number from 1 to 2**31 - 1 raises :class:`~hexa_event.errors.ConfigurationError`.
    """
    if limit is not None:
        check_limit("outbox_stats limit", limit)
    t = table
    unsent = t.c.sent_at.is_(None)
    not_parked = or_(t.c.lease_token.is_(None), t.c.lease_token != PARKED)
    # A parked row has a lease (until the year 9999): found in the index of leased rows.
    is_parked = and_(unsent, t.c.lease_until.is_not(None), t.c.lease_token == PARKED)
    if limit is None:
        stmt = select(func.count(), func.min(t.c.created_at)).where(unsent, not_parked)
    else:
        first = (
            select(t.c.created_at)
            .where(unsent, not_parked)
            .order_by(t.c.id)
            .limit(limit + 1)  # one more: whether there are more
            .subquery("first_unsent")
        )
        stmt = select(func.count(), func.min(first.c.created_at))
    async with db.connect() as conn:
        count, oldest = (await conn.execute(stmt)).one()
        parked = (await conn.execute(select(func.count()).where(is_parked))).scalar_one()
    age = None
    if oldest is not None:
        if isinstance(oldest, str):  # SQLite without type processing (raw text)
            oldest = datetime.fromisoformat(oldest)
        age = max(0.0, (utcnow() - as_utc(oldest)).total_seconds())
    more = limit is not None and count > limit
    return OutboxStats(
        backlog=limit if more and limit is not None else int(count),
        oldest_unsent_age=age,
        in_flight=in_flight,
        published=published,
        failed_batches=failed_batches,
        parked=int(parked),
        backlog_at_least=more,
    )


def _ready(table: Table, limit: int) -> Any:
    """The ids of up to ``limit`` unsent rows that are not leased, in id order: ready to
    claim, barring per-key order (a row held back behind an earlier row of its key)."""
    t = table
    now = utcnow()
    return (
        select(t.c.id)
        .where(t.c.sent_at.is_(None), or_(t.c.lease_until.is_(None), t.c.lease_until < now))
        .order_by(t.c.id)
        .limit(limit)
    )


async def any_ready(db: AsyncEngine, table: Table) -> bool:
    """Whether an unsent row is not leased: one row read, not a count of the backlog."""
    async with db.connect() as conn:
        return (await conn.execute(_ready(table, 1))).first() is not None


async def ready_count(db: AsyncEngine, table: Table, *, limit: int) -> int:
    """How many unsent rows are not leased, counted up to ``limit`` (at most ``limit``
    rows read, whatever the backlog)."""
    stmt = select(func.count()).select_from(_ready(table, limit).subquery("ready"))
    async with db.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())
