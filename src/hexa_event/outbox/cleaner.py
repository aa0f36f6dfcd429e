"""The outbox cleaner: deletes sent rows older than a retention period, in small batches.

Unsent rows are never deleted, whatever their age (the batching is :mod:`hexa_event._sql`'s).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .._sql.cleaner import CUTOFF, LIMIT, BatchCleaner
from .._sql.names import check_dialect
from .store import names_of, resolve_table


class OutboxCleaner(BatchCleaner):
    """Deletes outbox rows sent more than ``retention`` ago, ``batch_size`` at a time.

    ``db`` is a URL or an ``AsyncEngine``. :meth:`run_once` cleans now (for cron jobs and
    the CLI); :meth:`run` repeats every ``interval`` seconds until :meth:`stop`.
    ``schema``/``table_prefix`` pick the outbox table (:func:`~hexa_event.outbox.table_for`).
    """

    what = "outbox rows"

    def __init__(
        self,
        db: str | AsyncEngine,
        *,
        retention: timedelta = timedelta(days=7),
        batch_size: int = 1000,
        interval: float = 60.0,
        schema: str | None = None,
        table_prefix: str = "",
        table: Table | None = None,
    ) -> None:
        table = resolve_table(table, schema, table_prefix, owner="OutboxCleaner")
        super().__init__(
            db, table=table, retention=retention, batch_size=batch_size, interval=interval
        )
        check_dialect(names_of(table), self.engine.dialect.name, owner="OutboxCleaner")

    def delete_statement(self) -> Any:
        t = self.table
        expired = select(t.c.id).where(t.c.sent_at.is_not(None), t.c.sent_at < CUTOFF).limit(LIMIT)
        return delete(t).where(t.c.id.in_(expired))
