"""Putting parked rows back in line once what made the target refuse them is fixed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigurationError
from ..numbers import shown
from .claims import PARKED, sqlite_ids_per_statement, too_many_variables
from .store import outbox_table

IDS_PER_STATEMENT = 10_000
"""Row ids bound in one statement of :func:`requeue_parked` on PostgreSQL (its protocol
binds at most 32,767 values); on SQLite, what its version allows (999 before 3.32), halved
while a build with a lower limit says they are too many."""
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
    # One bound value per id: in slices, under the databases' limits, in one transaction
    # (tried again with half as many per statement while SQLite refuses them).
    step = IDS_PER_STATEMENT
    if db.dialect.name == "sqlite":
        step = await sqlite_ids_per_statement(db)
    while True:
        try:
            return await _requeue(db, stmt.where, t.c.id, wanted, step)
        except Exception as exc:
            if step > 1 and too_many_variables(exc):
                step //= 2
                continue
            raise


async def _requeue(db: AsyncEngine, where: Any, column: Any, ids: list[int], step: int) -> int:
    """Requeue ``ids``, ``step`` per statement, in one transaction; the rows requeued."""
    total = 0
    async with db.begin() as conn:
        for start in range(0, len(ids), step):
            part = ids[start : start + step]
            total += int((await conn.execute(where(column.in_(part)))).rowcount)
    return total
