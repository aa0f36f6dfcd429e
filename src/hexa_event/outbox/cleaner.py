"""The outbox cleaner: deletes what was sent longer ago than a retention period, in small
batches: lines of the sent log, and rows an older relay marked sent in place.

Unsent rows are never deleted, whatever their age (the batching is :mod:`hexa_event._sql`'s).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select

from .._sql.cleaner import CUTOFF, LIMIT, BatchCleaner
from .._sql.engine import transaction
from . import store
from .sentlog import clean_statement, has_sent_log

log = logging.getLogger(__name__)


class OutboxCleaner(BatchCleaner):
    """Deletes outbox rows sent more than ``retention`` ago, ``batch_size`` at a time.

    ``db`` is a URL or an ``AsyncEngine``. :meth:`run_once` cleans now (for cron jobs and
    the CLI); :meth:`run` repeats every ``interval`` seconds until :meth:`stop`.
    ``schema``/``table_prefix`` pick the outbox table (:func:`~hexa_event.outbox.table_for`).
    What it deletes are lines of the sent log (``hexa_outbox_sent``, one per relayed batch,
    ``batch_size`` lines per transaction) and rows marked sent in the outbox table itself
    (by relays of older versions); the count it returns is of outbox rows either way.
    """

    what = "outbox rows"
    resolve_table = staticmethod(store.resolve_table)

    def delete_statement(self) -> Any:
        t = self.table
        expired = select(t.c.id).where(t.c.sent_at.is_not(None), t.c.sent_at < CUTOFF).limit(LIMIT)
        return delete(t).where(t.c.id.in_(expired))

    async def run_once(self) -> int:
        """Delete every expired row (marked in place) and sent-log line; the outbox rows
        they stood for."""
        total = await super().run_once()
        if self._stop.is_set():  # closed meanwhile: its engine may be disposed, open nothing
            return total
        if not await has_sent_log(self.engine, self.table):
            return total  # an outbox migrated by an older version: rows marked in place only
        stmt = clean_statement(self.table)
        cutoff = self.cutoff()
        logged = 0
        while not self._stop.is_set():
            async with self.turns.turn(), transaction(self.engine) as conn:
                result = await conn.execute(stmt, {"cutoff": cutoff, "limit": self.batch_size})
                counts = result.scalars().all()
            self.beat()
            logged += sum(counts)
            if len(counts) < self.batch_size:
                break
        if logged:
            log.info("deleted the sent-log lines of %d %s", logged, self.what)
        return total + logged
