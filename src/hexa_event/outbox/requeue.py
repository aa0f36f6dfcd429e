"""Putting parked rows back in line once what made the target refuse them is fixed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigurationError
from ..numbers import shown
from .claims import PARKED
from .store import outbox_table

IDS_PER_STATEMENT = 10_000
"""Row ids bound in one statement of :func:`requeue_parked`."""
_LARGEST_ID = 2**63 - 1


def checked_ids(ids: Sequence[int]) -> list[int]:
    """``ids`` as a list of row ids; :class:`ConfigurationError` naming the first one that
    is not a whole number a BIGINT column holds (a bool, a text, 400 digits). A text is a
    sequence too: ``ids="12"`` requeued rows 1 and 2 on SQLite (its digits)."""
    wanted = list(ids)
    for row_id in wanted:
        if (
            not isinstance(row_id, int)
            or isinstance(row_id, bool)
            or not -_LARGEST_ID <= row_id <= _LARGEST_ID
        ):
            raise ConfigurationError(
                "requeue_parked ids must be outbox row ids (whole numbers up to 2**63 - 1), "
                f"got {shown(row_id)[:60]}"
            )
    return wanted


async def requeue_parked(
    db: AsyncEngine, table: Table = outbox_table, ids: Sequence[int] | None = None
) -> int:
    """Put parked rows (all, or those of ``ids``) back in line to be relayed, once what
    made the target refuse them is fixed (a larger size limit, say); the rows requeued.
    ``ids`` that are not row ids raise :class:`~hexa_event.errors.ConfigurationError`."""
    t = table
    stmt = (
        update(t)
        .where(t.c.sent_at.is_(None), t.c.lease_token == PARKED)
        .values(lease_until=None, lease_token=None)
    )
    if ids is None:
        async with db.begin() as conn:
            return int((await conn.execute(stmt)).rowcount)
    wanted = checked_ids(ids)
    # One bound value per id: in slices, under the databases' limits (32,767 for
    # PostgreSQL's protocol, 32,766 or fewer for SQLite's), in one transaction.
    total = 0
    async with db.begin() as conn:
        for start in range(0, len(wanted), IDS_PER_STATEMENT):
            part = wanted[start : start + IDS_PER_STATEMENT]
            total += int((await conn.execute(stmt.where(t.c.id.in_(part)))).rowcount)
    return total
