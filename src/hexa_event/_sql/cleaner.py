"""Deleting expired rows batch by batch: the outbox's and the inbox's cleaners.

Each batch is its own short transaction, so a cleaner never holds locks for long and can run
next to relays, emitters and handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, Table, bindparam
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigurationError
from .clock import utcnow
from .engine import engine_for
from .problems import brief

log = logging.getLogger(__name__)

CUTOFF = bindparam("cutoff", type_=DateTime(timezone=True))
"""The ``:cutoff`` parameter (a UTC datetime) of a cleaner's delete statement."""
LIMIT = bindparam("limit", type_=Integer())
"""The ``:limit`` parameter (the batch size) of a cleaner's delete statement."""


class BatchCleaner:
    """Deletes expired rows of ``table`` batch by batch; subclasses say which rows.

    ``db`` is a URL or an ``AsyncEngine`` (which stays the caller's). :meth:`run_once`
    cleans now (cron jobs, the CLI); :meth:`run` repeats every ``interval`` seconds until
    :meth:`stop`.
    """

    what = "rows"

    def __init__(
        self,
        db: str | AsyncEngine,
        *,
        table: Table,
        retention: timedelta,
        batch_size: int = 1000,
        interval: float = 60.0,
    ) -> None:
        if retention < timedelta(0):
            raise ConfigurationError(f"retention must not be negative, got {retention}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be at least 1, got {batch_size}")
        if not interval > 0:  # NaN too: it would make run() clean without pause
            raise ConfigurationError(f"interval must be positive, got {interval}")
        self.engine, self._owns_engine = engine_for(db)
        self.table = table
        self.retention = retention
        self.batch_size = batch_size
        self.interval = interval
        self._stop = asyncio.Event()

    def delete_statement(self) -> Any:
        """A DELETE of at most ``:limit`` rows expired before ``:cutoff`` (:data:`CUTOFF`,
        :data:`LIMIT`)."""
        raise NotImplementedError

    async def run_once(self) -> int:
        """Delete every expired row, ``batch_size`` per transaction; the number deleted."""
        cutoff = utcnow() - self.retention
        stmt = self.delete_statement()
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
