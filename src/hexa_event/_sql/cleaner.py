"""Deleting expired rows batch by batch: the outbox's and the inbox's cleaners.

Each batch is its own short transaction, so a cleaner never holds locks for long and can run
next to relays, emitters and handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, Table, bindparam
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import ConfigurationError
from ..numbers import LARGEST, check_number, duration, shown
from .clock import utcnow
from .engine import GOODBYE_WAIT, dispose_within, engine_for, transaction
from .health import Progress
from .names import check_table_dialect
from .problems import brief
from .turns import WriteTurns

log = logging.getLogger(__name__)

_MAX_INT = 2**31 - 1

SHORTEST_INTERVAL = 0.001
"""The shortest pause between the runs of a loop (a cleaner's ``interval``, the outbox
relay's ``poll_interval`` and ``stats_interval``), in seconds: 1e-300 is no pause, and the
loop took a core and the database's time while it looked healthy."""

CUTOFF = bindparam("cutoff", type_=DateTime(timezone=True))
"""The ``:cutoff`` parameter (a UTC datetime) of a cleaner's delete statement."""
LIMIT = bindparam("limit", type_=Integer())
"""The ``:limit`` parameter (the batch size) of a cleaner's delete statement."""


class BatchCleaner:
    """Deletes expired rows of ``table`` batch by batch; subclasses say which rows.

    ``db`` is a URL or an ``AsyncEngine`` (which stays the caller's). :meth:`run_once`
    cleans now (cron jobs, the CLI); :meth:`run` repeats every ``interval`` seconds until
    :meth:`stop`. :meth:`health` turns unhealthy once every run has failed (at least
    twice) for ``unhealthy_after`` seconds, or a run has deleted no batch for that long.
    The table is ``table``, or the one :meth:`resolve_table` finds by ``schema`` and
    ``table_prefix`` (not both).
    """

    what = "rows"

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
        owner = type(self).__name__
        table = self.resolve_table(table, schema, table_prefix, owner=owner)
        check_number(f"{owner} unhealthy_after", unhealthy_after, above=True)
        if retention < timedelta(0):
            raise ConfigurationError(f"retention must not be negative, got {retention}")
        # PostgreSQL binds the LIMIT as a 32-bit integer: a larger one fails every run.
        check_number(
            f"{owner} batch_size",
            batch_size,
            minimum=1,
            maximum=_MAX_INT,
            integer=True,
        )
        check_interval(owner, interval)
        self.engine, self._owns_engine = engine_for(db)
        self.table = table
        self.retention = retention
        self.batch_size = batch_size
        self.interval = interval
        self.unhealthy_after = float(unhealthy_after)
        self._stop = asyncio.Event()
        self._progress = Progress(f"cleaning {what_of(self)}", self.unhealthy_after, log)
        self._state = "new"
        self._runs = 0
        self._deleted = 0
        self._busy_since: float | None = None
        """Monotonic time the current run started or last deleted a batch."""
        self._cleaned_at: float | None = None
        self.turns = WriteTurns(sqlite=self.engine.dialect.name == "sqlite")
        """Paces the delete transactions on SQLite so the application gets the lock too."""
        check_table_dialect(table, self.engine.dialect.name, owner=owner)

    @staticmethod
    def resolve_table(
        table: Table | None, schema: str | None, table_prefix: str | None, *, owner: str
    ) -> Table:
        """The table to clean: ``table``; a subclass finds its own by ``schema`` and
        ``table_prefix``."""
        if table is None or schema or table_prefix:
            raise ConfigurationError(f"{owner} needs table= (and no schema=/table_prefix=)")
        return table

    def delete_statement(self) -> Any:
        """A DELETE of at most ``:limit`` rows expired before ``:cutoff`` (:data:`CUTOFF`,
        :data:`LIMIT`)."""
        raise NotImplementedError

    def cutoff(self) -> datetime:
        """Now less the retention: what was written before it has expired. A retention
        reaching past the year 1 expires nothing (the earliest time a datetime holds)."""
        try:
            return utcnow() - self.retention
        except OverflowError:
            return datetime.min.replace(tzinfo=UTC)

    async def run_once(self) -> int:
        """Delete every expired row, ``batch_size`` per transaction; the number deleted."""
        cutoff = self.cutoff()
        stmt = self.delete_statement()
        total = 0
        while not self._stop.is_set():
            async with self.turns.turn(), transaction(self.engine) as conn:
                result = await conn.execute(stmt, {"cutoff": cutoff, "limit": self.batch_size})
            deleted = max(int(result.rowcount or 0), 0)
            self.beat()
            total += deleted
            if deleted < self.batch_size:
                break
        if total:
            log.info("deleted %d expired %s", total, self.what)
        return total

    def beat(self) -> None:
        """A batch was deleted (or found none): the run makes progress."""
        if self._busy_since is not None:
            self._busy_since = time.monotonic()

    async def run(self) -> None:
        """Clean every ``interval`` seconds until :meth:`stop`; failures are logged."""
        self._state = "running"
        try:
            while not self._stop.is_set():
                self._busy_since = time.monotonic()
                try:
                    self._deleted += await self.run_once()
                except Exception as exc:
                    self._progress.failed("cleaning", exc)
                    log.warning(
                        "cleaning %s failed (%s: %s)", self.what, type(exc).__name__, brief(exc)
                    )
                else:
                    self._progress.succeeded("cleaning")
                    self._cleaned_at = time.monotonic()
                finally:
                    self._busy_since = None
                    self._runs += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            if self._state == "running":
                self._state = "stopped"

    def health(self) -> dict[str, Any]:
        """A snapshot for health checks, shaped like ``Receiver.health()``: ``healthy``,
        ``reason``, ``state`` (``new``, ``running``, ``stopped``, ``closed``), ``runs``,
        ``deleted``, ``error`` (of the failing runs), ``failing_for`` (seconds),
        ``last_cleaned_age`` (seconds since the last run that worked); a run that has
        deleted no batch for ``unhealthy_after`` seconds is a problem too (``stalled``, for
        liveness, stays False: a restart would not mend the database). No database query."""
        now = time.monotonic()
        problems = self._progress.problems(now)
        busy = now - (self._busy_since or now)
        if busy > self.unhealthy_after:  # the database does not answer: no restart mends it
            problems.append(f"a delete has not returned for {duration(busy)}")
        healthy = self._state == "running" and not problems
        reasons = list(problems) or ([] if healthy else [f"cleaner is {self._state}"])
        cleaned = self._cleaned_at
        return {
            "cleaner": what_of(self),
            "state": self._state,
            "healthy": healthy,
            "reason": "; ".join(reasons),
            "alive": True,
            "stalled": False,
            "runs": self._runs,
            "deleted": self._deleted,
            "error": self._progress.error("cleaning"),
            "failing_for": self._progress.failing_for(now),
            "last_cleaned_age": round(now - cleaned, 3) if cleaned is not None else None,
            "problems": problems,
        }

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Stop and release the engine if this cleaner created it. Idempotent."""
        self.stop()
        self._state = "closed"
        if self._owns_engine and not await dispose_within(self.engine, GOODBYE_WAIT):
            log.error(
                "%s: close() dropped the engine's connections unclosed: the database did "
                "not answer within %.0fs",
                what_of(self),
                GOODBYE_WAIT,
            )

    async def __aenter__(self) -> BatchCleaner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def check_interval(owner: str, interval: object) -> None:
    """Refuse an ``interval`` asyncio cannot wait (NaN, not positive, a bool, a text, 400
    digits: ``run()`` died of OverflowError at its first pause) or that is no pause (under
    :data:`SHORTEST_INTERVAL`), naming ``owner``'s option; the shared number check, worded
    for the seconds between runs."""
    try:
        check_number(f"{owner} interval", interval, minimum=SHORTEST_INTERVAL)
    except ConfigurationError:
        raise ConfigurationError(
            f"{owner}: interval must be positive seconds, from {SHORTEST_INTERVAL:g} to "
            f"{LARGEST:g}; got {shown(interval)}"
        ) from None


def what_of(cleaner: BatchCleaner) -> str:
    """What ``cleaner`` deletes, and where: ``outbox rows of billing.hexa_outbox``."""
    return f"{cleaner.what} of {cleaner.table.fullname}"
