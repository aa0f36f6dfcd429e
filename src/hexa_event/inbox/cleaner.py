"""The inbox cleaner: deletes dedup records older than a retention period, in batches.

The retention is the dedup window: an event redelivered after its record was deleted is
handled again. Keep it longer than any redelivery or replay you expect (default 7 days).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, tuple_

from .._sql.cleaner import CUTOFF, LIMIT, BatchCleaner
from . import store


class InboxCleaner(BatchCleaner):
    """Deletes inbox records handled more than ``retention`` ago, ``batch_size`` at a time.

    ``schema``/``table_prefix`` pick the inbox table (:func:`~hexa_event.inbox.table_for`).
    """

    what = "inbox records"
    resolve_table = staticmethod(store.resolve_table)

    def delete_statement(self) -> Any:
        t = self.table
        expired = select(t.c.event_id, t.c.action).where(t.c.processed_at < CUTOFF).limit(LIMIT)
        return delete(t).where(tuple_(t.c.event_id, t.c.action).in_(expired))
