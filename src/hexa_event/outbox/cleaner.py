"""The cleaner: deletes sent outbox rows older than a retention period, in small batches.

Unsent rows are never deleted, whatever their age. Each batch is its own short transaction,
so the cleaner never holds locks for long and can run next to relays and emitters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import BindParameter, DateTime, Integer, Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigurationError
from ._sql import make_async_engine, utcnow
from .store import outbox_table

log = logging.getLogger(__name__)


def brief(exc: BaseException) -> str:
    """An error's first line (SQLAlchemy appends the SQL and its parameters below it)."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


def cutoff_param() -> BindParameter[Any]:
    """The ``:cutoff`` parameter (a UTC datetime) of a cleaner's delete statement."""
    return bindparam("cutoff", type_=DateTime(timezone=True))


def limit_param() -> BindParameter[Any]:
    """The ``:limit`` parameter (the batch size) of a cleaner's delete statement."""
    return bindparam("limit", type_=Integer())


class BatchCleaner:
    """Deletes expired rows batch by batch; the outbox and inbox cleaners specialise it."""

    what = "rows"

    def __init__(
        self,
        db: str | AsyncEngine,
        *,
        retention: timedelta,
        batch_size: int = 1000,
        interval: float = 60.0,
    ) -> None:
        if retention < timedelta(0):
            raise ConfigurationError(f"retention must not be negative, got {retention}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if interval <= 0:
            raise ConfigurationError(f"interval must be positive, got {interval}")
        self.engine, self._owns_engine = make_async_engine(db)
        self.retention = retention
        self.batch_size = batch_size
        self.interval = interval
        self._stop = asyncio.Event()

    def _delete_statement(self) -> Any:
        raise NotImplementedError

    async def run_once(self) -> int:
        """Delete every expired row, ``batch_size`` per transaction; the number deleted."""
        cutoff = utcnow() - self.retention
        stmt = self._delete_statement()
        total = 0
        while not self._stop.is_set():
            async with self.engine.begin() as conn:
                result = await conn.execute(stmt, {"cutoff": cutoff, "limit": self.batch_size})
            deleted = max(int(result.rowcount or 0), 0)
            total += deleted
            if deleted < self.batch_size:
                break
        if total:
            log.info("deleted %d expired %s", total, self.what)
        return total

    async def run(self) -> None:
        """Clean every ``interval`` seconds until :meth:`stop`; failures are logged."""
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:
                log.warning(
                    "cleaning %s failed (%s: %s)", self.what, type(exc).__name__, brief(exc)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop and release the engine if this cleaner created it. Idempotent."""
        self.stop()
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> BatchCleaner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class OutboxCleaner(BatchCleaner):
    """Deletes outbox rows sent more than ``retention`` ago, ``batch_size`` at a time.

    ``db`` is a URL or an ``AsyncEngine``. :meth:`run_once` cleans now (for cron jobs and
    the CLI); :meth:`run` repeats every ``interval`` seconds until :meth:`stop`.
    """

    what = "outbox rows"

    def __init__(
        self,
        db: str | AsyncEngine,
        *,
        retention: timedelta = timedelta(days=7),
        batch_size: int = 1000,
        interval: float = 60.0,
        table: Table = outbox_table,
    ) -> None:
        super().__init__(db, retention=retention, batch_size=batch_size, interval=interval)
        self.table = table

    def _delete_statement(self) -> Any:
        t = self.table
        expired = (
            select(t.c.id)
            .where(t.c.sent_at.is_not(None), t.c.sent_at < cutoff_param())
            .limit(limit_param())
        )
        return delete(t).where(t.c.id.in_(expired))
