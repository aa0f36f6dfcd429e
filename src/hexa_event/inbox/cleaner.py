"""The inbox cleaner: deletes dedup records older than a retention period, in batches.

The retention is the dedup window: an event redelivered after its record was deleted is
handled again. Keep it longer than any redelivery or replay you expect (default 7 days).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from .._sql.cleaner import CUTOFF, LIMIT, BatchCleaner
from .store import check_table_dialect, resolve_table


class InboxCleaner(BatchCleaner):
    """Deletes inbox records handled more than ``retention`` ago, ``batch_size`` at a time.

    ``schema``/``table_prefix`` pick the inbox table (:func:`~hexa_event.inbox.table_for`).
    """

    what = "inbox records"

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
        unhealthy_after: float = 60.0,
    ) -> None:
        table = resolve_table(table, schema, table_prefix, owner="InboxCleaner")
        super().__init__(
            db,
            table=table,
            retention=retention,
            batch_size=batch_size,
            interval=interval,
            unhealthy_after=unhealthy_after,
        )
        check_table_dialect(table, self.engine.dialect.name, owner="InboxCleaner")

    def delete_statement(self) -> Any:
        t = self.table
        expired = select(t.c.event_id, t.c.action).where(t.c.processed_at < CUTOFF).limit(LIMIT)
        return delete(t).where(tuple_(t.c.event_id, t.c.action).in_(expired))
