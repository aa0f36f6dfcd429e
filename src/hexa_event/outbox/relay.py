"""The relay: publishes unsent outbox rows to any driver, without re-encoding them.

Guarantees (PostgreSQL and SQLite):

- At least once: a row is marked sent only after ``driver.publish`` returned for it (the
  broker acknowledged it). A relay that dies between the two leaves the row unsent; it is
  published again (by any relay) once its claim is gone, so consumers see a duplicate with
  the same ``HEXA_EVENT_ID`` (the inbox recognises it).
- No late-commit gap: every claim re-reads *all* unsent rows, it keeps no high-water mark,
  so a row whose transaction commits after later ones is still sent.
- Per-key order: a row is not claimed while an earlier unsent row of its key is held by
  *another* relay or waits to retry after a failure. Within one relay, batches are claimed
  ahead (pipelined) but published strictly one after another in claim order, rows in id
  order; if a publish fails, the batches claimed after it are not published but put back
  too. For rows of concurrent transactions the order is their commit order.
- Several relays may run at once (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
  serialises writers itself).
- Claims: ``claim_mode="lock"`` (PostgreSQL default) keeps the claim transaction open while
  publishing, its row locks are the lease: a killed relay's rows are free at once, a hung
  one is cut off after ``lease`` seconds (``idle_in_transaction_session_timeout``); one
  row write per event. ``claim_mode="lease"`` (SQLite; PostgreSQL behind a
  transaction-pooling proxy) writes ``lease_until``/``lease_token`` into the rows, under a
  short advisory lock on PostgreSQL so the per-key check sees the other relays' leases.
- Wake-ups: PostgreSQL ``LISTEN hexa_outbox`` (see ``Outbox(notify=...)``; the channel is
  the table's qualified name, ``billing.hexa_outbox`` with ``schema="billing"``) when the
  engine uses asyncpg, and polling every ``poll_interval`` seconds in any case.
- ``schema``/``table_prefix`` pick the outbox table (:func:`~hexa_event.outbox.table_for`):
  claims, marks, stats and wake-ups then touch that table only.

The lease must exceed the slowest publish: a batch still publishing when its lease ends may
be published again by another relay (a duplicate, and the key's order may break).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import compress
from typing import Any

import msgspec
from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .._sql.clock import as_utc, utcnow
from .._sql.engine import engine_for
from .._sql.health import Progress
from .._sql.listen import listen
from .._sql.names import check_dialect
from .._sql.problems import brief
from ..driver import Driver, RawRecord
from ..envelope import DELIVER_AT
from ..errors import ConfigurationError, InvalidEventError, NotStoredError, PartialPublishError
from ..event import MAX_SCHEDULE
from ..numbers import check_number
from .claims import (
    PARKED,
    Claimed,
    ClaimSettings,
    ClaimStrategy,
    LeaseClaims,
    LockClaims,
    Published,
)
from .store import names_of, notify_channel, outbox_table, resolve_table

log = logging.getLogger(__name__)

_MAX_INT = 2**31 - 1
_MAX_SECONDS = _MAX_INT // 1000
BACKLOG_LIMIT = 100_000
"""Unsent rows a relay's :meth:`~OutboxRelay.stats` counts at most (``backlog_limit``)."""
_IDS_PER_STATEMENT = 10_000
"""Row ids bound in one statement of :func:`requeue_parked`."""


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


def outcome(
    exc: BaseException, count: int
) -> tuple[list[int], dict[int, str], list[int], list[int]]:
    """What a failed ``publish`` of ``count`` records says of each (indexes): stored,
    refused for good (with why), known not sent (may be sent again at once), unknown."""
    if isinstance(exc, PartialPublishError):
        stored = sorted(exc.stored)
        parked = {
            i: brief(e)
            for i, e in exc.failed.items()
            if isinstance(e, NotStoredError) and not e.retriable
        }
        unsent = sorted(
            i for i, e in exc.failed.items() if isinstance(e, NotStoredError) and e.retriable
        )
        unknown = sorted(i for i in exc.failed if i not in parked and i not in unsent)
        return stored, parked, unsent, unknown
    if count == 1 and _refused_for_good(exc):
        return [], {0: brief(exc)}, [], []
    if count > 1 and isinstance(exc, InvalidEventError):
        # Refused before sending, and which record is not said: send them one at a time.
        return [], {}, list(range(count)), []
    return [], {}, [], list(range(count))


def with_due_times(records: list[RawRecord]) -> list[RawRecord]:
    """``records``, a scheduled event's (``HEXA_DELIVER_AT``, epoch ms) with its due time as
    ``not_before``: the emitter does so for a broker that holds a record until due
    (``features.scheduled_publish``), and so does the relay. A due time that is not a
    number is left to the consumer (which refuses it); one further than the longest
    schedule is held that long (the consumer waits no longer either)."""
    latest = time.time() + MAX_SCHEDULE
    for n, record in enumerate(records):
        raw = record.headers.get(DELIVER_AT)
        if raw is not None and raw.isdigit() and len(raw) <= 18:  # ASCII digits only
            due = min(int(raw) / 1000, latest)
            records[n] = msgspec.structs.replace(record, not_before=due)
    return records


def _refused_for_good(exc: BaseException) -> bool:
    """A refusal that sending again cannot overcome, and nothing stored."""
    if isinstance(exc, NotStoredError):
        return not exc.retriable
    return isinstance(exc, InvalidEventError)


class OutboxRelay:
    """Moves unsent outbox rows to ``driver``. Use ``async with``, or call :meth:`close`.

    ``db`` is a database URL (``postgresql://``, ``sqlite:///``; an asyncio driver is picked)
    or an ``AsyncEngine`` (which stays the caller's). ``batch_size`` rows are claimed at a
    time; each batch is split by key into up to ``concurrency`` concurrent
    ``driver.publish`` calls; up to ``pipeline`` batches are claimed ahead, publishing or
    being marked sent at once. ``lease`` (seconds) is how long a claim lasts before another
    relay may take the rows over; ``retry_delay`` how long a batch whose publish failed
    waits (its key's later rows wait too). Sent rows are deleted and each batch leaves
    one line in the sent log (``hexa_outbox_sent``: when, how many rows, their event ids),
    which the cleaner deletes after its retention; ``keep_sent=False`` writes no such line
    (``hexa-event outbox status`` then cannot tell the send rate). An outbox migrated by an
    older version, without a sent log, gets ``sent_at`` set in place until ``migrate`` adds
    it. ``claim_mode``: ``"lock"`` (PostgreSQL default) holds
    the claimed rows' ``FOR UPDATE`` locks in an open transaction while publishing (the
    lease is the session: a killed relay releases them at once; a hung one is cut off by
    ``idle_in_transaction_session_timeout`` = ``lease``), one row write per event;
    ``"lease"`` (SQLite, or PostgreSQL behind a transaction-pooling proxy) writes a lease
    into each row. The relay does not close ``driver``.

    :meth:`health` says whether it makes progress: it turns unhealthy when claiming,
    publishing or marking sent has failed every time (at least twice) for
    ``unhealthy_after`` seconds, or a claim has not come back for that long (a batch: for
    that long past twice the ``lease``, the longest its marks are retried), or, when
    ``max_unsent_age`` (seconds) is set, the oldest unsent row is older than that (rows of
    one key whose publishes keep failing while other keys' go out). While :meth:`run` runs
    it samples the backlog every ``stats_interval`` seconds, counting at most
    ``backlog_limit`` rows.
    """

    def __init__(
        self,
        db: str | AsyncEngine,
        driver: Driver,
        *,
        batch_size: int = 1000,
        concurrency: int = 4,
        pipeline: int = 3,
        lease: float = 30.0,
        retry_delay: float = 2.0,
        poll_interval: float = 1.0,
        listen: bool = True,
        keep_sent: bool = True,
        claim_mode: str | None = None,
        schema: str | None = None,
        table_prefix: str = "",
        table: Table | None = None,
        unhealthy_after: float = 60.0,
        stats_interval: float = 15.0,
        backlog_limit: int = BACKLOG_LIMIT,
        max_unsent_age: float | None = None,
    ) -> None:
        table = resolve_table(table, schema, table_prefix, owner="OutboxRelay")
        check_number("OutboxRelay unhealthy_after", unhealthy_after, above=True)
        check_number("OutboxRelay stats_interval", stats_interval, above=True)
        check_number(
            "OutboxRelay backlog_limit", backlog_limit, minimum=1, maximum=_MAX_INT, integer=True
        )
        if max_unsent_age is not None:
            check_number("OutboxRelay max_unsent_age", max_unsent_age, above=True)
        if not 1 <= batch_size <= _MAX_INT:
            raise ConfigurationError(f"batch_size must be 1 to {_MAX_INT}, got {batch_size}")
        if concurrency < 1 or pipeline < 1:
            raise ConfigurationError(
                f"concurrency and pipeline must be at least 1, got {concurrency}, {pipeline}"
            )
        # Written so that NaN fails too; the bounds are PostgreSQL's for the lock mode's
        # idle_in_transaction_session_timeout (whole milliseconds in a 32-bit integer, where
        # 0 means no timeout at all).
        if not (
            0.001 <= lease <= _MAX_SECONDS
            and 0 <= retry_delay <= _MAX_SECONDS
            and 0 < poll_interval <= _MAX_SECONDS
        ):
            raise ConfigurationError(
                "lease (from 0.001 s) and poll_interval must be positive and retry_delay not "
                f"negative, each at most {_MAX_SECONDS:.0f} s (about 24 days); got "
                f"lease={lease!r}, retry_delay={retry_delay!r}, poll_interval={poll_interval!r}"
            )
        if not driver.features.persistent:
            raise ConfigurationError(
                f"the outbox relay needs a persistent target, and {driver.features.name!r} "
                "loses what it holds when its process ends (rows would be marked sent and "
                "lost); relay to a broker or database such as kafka://... or postgresql://..."
            )
        self.engine, self._owns_engine = engine_for(db)
        self.driver = driver
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.pipeline = pipeline
        self.owner = str(uuid.uuid4())
        """This relay's lease token: its own leases never block its own claims."""
        self.lease = lease
        self.retry_delay = retry_delay
        self.poll_interval = poll_interval
        self.listen = listen
        self.keep_sent = keep_sent
        self.table = table
        self._dialect = self.engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ConfigurationError(
                f"the outbox relay supports PostgreSQL and SQLite, not {self._dialect!r}"
            )
        check_dialect(names_of(table), self._dialect, owner="OutboxRelay")
        if claim_mode is None:
            claim_mode = "lock" if self._dialect == "postgresql" else "lease"
        if claim_mode not in ("lock", "lease") or (
            claim_mode == "lock" and self._dialect != "postgresql"
        ):
            raise ConfigurationError(
                "claim_mode is 'lease' (any database) or 'lock' (PostgreSQL only)"
            )
        self.claim_mode = claim_mode
        settings = ClaimSettings(
            engine=self.engine,
            table=table,
            batch_size=batch_size,
            lease=lease,
            retry_delay=retry_delay,
            keep_sent=keep_sent,
            owner=self.owner,
        )
        self._claims: ClaimStrategy = (
            LockClaims(settings) if claim_mode == "lock" else LeaseClaims(settings)
        )
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()
        """Set while the relay LISTENs for notifications (PostgreSQL with asyncpg)."""
        self._in_flight = 0
        self._published = 0
        self._failed = 0
        self._parked = 0
        self._running = False
        self._ran = False
        self._closed = False
        self._loop_failure: BaseException | None = None
        self.unhealthy_after = float(unhealthy_after)
        self.stats_interval = float(stats_interval)
        self.backlog_limit = backlog_limit
        self.max_unsent_age = None if max_unsent_age is None else float(max_unsent_age)
        self._progress = Progress("outbox relay", self.unhealthy_after, log)
        self._claiming_since: float | None = None
        self._batches: dict[int, float] = {}
        """Monotonic start of each batch in flight, by its first row id."""
        self._sample: tuple[OutboxStats, float] | None = None
        self._sample_error = ""
        self._run_task: asyncio.Task[Any] | None = None
        self._deliveries: set[asyncio.Task[int]] = set()
        """The batches :meth:`run` has in flight."""
        self._chain: asyncio.Future[bool] | None = None
        """Publish result of the last batch claimed: the next one publishes after it."""

    # -- one batch ---------------------------------------------------------------------------

    async def _claim(self) -> Claimed | None:
        self._claiming_since = time.monotonic()
        try:
            await self._claims.prepare()
            batch = await self._claims.claim()
        except Exception as exc:
            self._progress.failed("claiming", exc)
            raise
        finally:
            self._claiming_since = None
        self._progress.succeeded("claiming")
        return batch

    async def _publish(self, batch: Claimed) -> Published:
        """Publish a batch: the ids published, parked (refused for good) and failed.

        Rows of one key stay in one ``driver.publish`` call, in id order; up to
        ``concurrency`` calls (disjoint keys) run at once, so a failure affects only its keys.
        """
        n = self.concurrency
        # A row whose stored headers do not decode cannot be sent: parked, not the batch.
        ids, keys, records, unreadable = batch.readable()
        if self.driver.features.scheduled_publish:
            records = with_due_times(records)
        parts: list[tuple[list[int], list[RawRecord]]]
        if n == 1 or len(ids) < 2 * n:
            parts = [(ids, records)]
        else:
            # Each row's part, then each part's rows, by map/compress: no Python code per
            # row. hash(): stable within the process, which is all a batch's split needs.
            part_of = list(map(n.__rmod__, map(hash, keys)))
            parts = []
            for index in range(n):
                chosen = list(map(index.__eq__, part_of))
                part_ids = list(compress(ids, chosen))
                if part_ids:
                    parts.append((part_ids, list(compress(records, chosen))))
        results = await asyncio.gather(
            *(self._publish_part(ids, records) for ids, records in parts)
        )
        total = Published(parked=unreadable)
        for part in results:
            total.done += part.done
            total.parked.update(part.parked)
            total.failed += part.failed
            total.error = total.error or part.error
        return total

    async def _publish_part(self, ids: list[int], records: list[RawRecord]) -> Published:
        """One ``driver.publish`` call, and its outcome per row: a row the driver refused
        for good (:class:`~hexa_event.errors.NotStoredError`, not retriable) is parked, rows
        it says were stored are done, and rows known not sent are sent again at once."""
        out = Published()
        while ids:
            try:
                await self.driver.publish(records)
            except Exception as exc:
                stored, parked, unsent, unknown = outcome(exc, len(ids))
                out.done += [ids[i] for i in stored]
                out.parked.update((ids[i], why) for i, why in parked.items())
                if len(unsent) == len(ids) > 1:
                    # Refused before sending, the culprit not named: one at a time.
                    return await self._one_by_one(ids, records)
                if parked and not unknown and len(unsent) < len(ids):
                    ids = [ids[i] for i in unsent]  # a refused row is out: the rest again
                    records = [records[i] for i in unsent]
                    continue
                out.failed += [ids[i] for i in sorted([*unsent, *unknown])]
                out.error = exc
                return out
            out.done += ids
            return out
        return out

    async def _one_by_one(self, ids: list[int], records: list[RawRecord]) -> Published:
        """Publish rows singly, in order; a row that fails holds back its key's later rows."""
        out = Published()
        held: set[str] = set()
        for row_id, record in zip(ids, records, strict=True):
            if record.key in held:
                out.failed.append(row_id)
                continue
            part = await self._publish_part([row_id], [record])
            out.done += part.done
            out.parked.update(part.parked)
            if part.failed:
                held.add(record.key)
                out.failed += part.failed
                out.error = out.error or part.error
        return out

    async def _deliver(
        self,
        batch: Claimed,
        previous: asyncio.Future[bool] | None = None,
        published: asyncio.Future[bool] | None = None,
    ) -> int:
        """Publish after ``previous`` published (order), then mark sent and/or release."""
        n = len(batch.ids)
        self._in_flight += n
        self._batches[batch.ids[0]] = time.monotonic()
        try:
            if previous is not None and not await asyncio.shield(previous):
                error = RuntimeError("an earlier batch of this relay failed to publish")
                result = Published(failed=batch.ids, error=error)
            else:
                result = await self._publish(batch)
                if result.parked:
                    self._parked += len(result.parked)
                    for row_id, why in sorted(result.parked.items()):
                        log.error(
                            "outbox relay: parked row %d, it cannot be sent (see last_error): %s",
                            row_id,
                            why,
                        )
                if result.failed:
                    self._failed += 1
                    self._progress.failed("publishing", result.error or "publish failed")
                    log.warning(
                        "outbox relay: publishing %d of %d rows failed (%s: %s); retrying in %.1fs",
                        len(result.failed),
                        n,
                        type(result.error).__name__,
                        brief(result.error) if result.error else "",
                        self.retry_delay,
                    )
                else:
                    self._progress.succeeded("publishing")
            if not await self._claims.finish(batch, result, published):
                if result.done:
                    why = self._claims.write_error or "the database refused the marks"
                    self._progress.failed("marking sent", why)
                return 0
            self._progress.succeeded("marking sent")
            self._published += len(result.done)
            return len(result.done)
        finally:
            self._batches.pop(batch.ids[0], None)
            await self._claims.forget(batch)
            if published is not None and not published.done():
                published.set_result(False)
            self._in_flight -= n
            self._wake.set()

    async def run_once(self) -> int:
        """Claim one batch, publish it and mark it sent; the number of rows marked sent.

        Returns 0 when nothing is ready. Raises the database's error if the claim fails;
        a failed publish is not raised (the rows are released for a retry) and returns 0.
        """
        previous = self._pending_chain()
        batch = await self._claim()
        if batch is None:
            return 0
        self._chain = asyncio.get_running_loop().create_future()
        return await self._deliver(batch, previous, self._chain)

    def _pending_chain(self) -> asyncio.Future[bool] | None:
        """The last batch's publish, if still pending: read it *before* claiming.

        A settled one is already released or published, which the claim then sees.
        """
        chain = self._chain
        return chain if chain is not None and not chain.done() else None

    async def drain(self, max_seconds: float = 60.0) -> int:
        """Run batches until nothing is ready (or ``max_seconds``); the rows sent."""
        deadline = time.monotonic() + max_seconds
        total = 0
        while time.monotonic() < deadline:
            sent = await self.run_once()
            if sent == 0:
                if await self.backlog_ready() == 0:
                    return total
                await self._idle(min(self.poll_interval, 0.1))  # rows held elsewhere
            total += sent
        return total

    async def backlog_ready(self) -> int:
        """Unsent rows that are not leased (claimable now, barring per-key order)."""
        t = self.table
        now = utcnow()
        stmt = (
            select(func.count())
            .select_from(t)
            .where(t.c.sent_at.is_(None), or_(t.c.lease_until.is_(None), t.c.lease_until < now))
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(stmt)).scalar_one())

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until :meth:`stop`; then finish the batches in flight and return.

        Database and broker failures are logged and retried with backoff; the loop only
        ends on :meth:`stop` or cancellation, which cancels the batches in flight too (their
        rows stay unsent: they are published again).
        """
        if self._running:
            raise RuntimeError("this relay is already running")
        self._running = self._ran = True
        self._loop_failure = None
        self._run_task = asyncio.current_task()
        listener = (
            asyncio.create_task(self._listen(), name="hexa-outbox-listen")
            if self.listen and self._dialect == "postgresql"
            else None
        )
        sampler = asyncio.create_task(self._sample_stats(), name="hexa-outbox-stats")
        slots = asyncio.Semaphore(self.pipeline)
        tasks = self._deliveries
        backoff = 0.1
        try:
            while not self._stop.is_set():
                await slots.acquire()
                if self._stop.is_set():
                    slots.release()
                    break
                self._wake.clear()
                previous = self._pending_chain()
                try:
                    batch = await self._claim()
                    backoff = 0.1
                except Exception as exc:
                    slots.release()
                    log.warning(
                        "outbox relay: claiming rows failed (%s: %s); retrying in %.1fs",
                        type(exc).__name__,
                        brief(exc),
                        backoff,
                    )
                    await self._idle(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if batch is None:
                    slots.release()
                    # A settling batch wakes us (its keys free up); otherwise poll.
                    await self._idle(self.poll_interval)
                    continue
                self._chain = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._deliver(batch, previous, self._chain))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _t: slots.release())
                task.add_done_callback(self._delivered)
        except asyncio.CancelledError:
            for task in tasks:  # the batches in flight too: released unsent, sent again
                task.cancel()
            raise
        except BaseException as exc:
            self._loop_failure = exc
            raise
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for helper in (listener, sampler):
                if helper is not None:
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            self._running = False

    def _delivered(self, task: asyncio.Task[int]) -> None:
        """A batch of :meth:`run` ended: one that raised (a driver's ``BaseException``,
        say) is a failed publish, said and counted, not a silent task exception."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self._failed += 1
        self._progress.failed("publishing", exc)
        log.error(
            "outbox relay: a batch failed (%s: %s); its rows are sent again once free",
            type(exc).__name__,
            brief(exc),
        )

    async def _idle(self, seconds: float) -> None:
        """Wait for a wake-up (notification, a batch settled, stop) or ``seconds``."""
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._stop.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _sample_stats(self) -> None:
        """Sample the backlog every ``stats_interval`` seconds, for :meth:`health`."""
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # stats() keeps the error for health()
                await self.stats()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.stats_interval)

    async def _listen(self) -> None:
        """LISTEN on the outbox channel (asyncpg only), reconnecting; wakes the loop."""

        def connected() -> None:
            self._wake.set()  # notifications may have been missed while away
            self.listening.set()

        await listen(
            self.engine,
            notify_channel(self.table),
            lambda _payload: self._wake.set(),
            on_connected=connected,
            on_lost=self.listening.clear,
            stop=self._stop,
            max_backoff=self.poll_interval,
        )

    @property
    def in_flight(self) -> int:
        """Rows this relay claimed and has not settled yet (no database query)."""
        return self._in_flight

    @property
    def failed_batches(self) -> int:
        """Batches whose publish failed since the relay was made (their rows wait for a
        retry)."""
        return self._failed

    @property
    def published(self) -> int:
        """Rows this relay marked sent since it was made (no database query)."""
        return self._published

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batches in flight settle. Safe to repeat."""
        self._stop.set()

    # -- observability -----------------------------------------------------------------------

    async def stats(self) -> OutboxStats:
        """Backlog and age of the oldest unsent row, plus counters: one indexed query that
        reads at most ``backlog_limit`` rows (beyond, ``backlog_at_least``)."""
        try:
            stats = await outbox_stats(
                self.engine,
                self.table,
                in_flight=self._in_flight,
                published=self._published,
                failed_batches=self._failed,
                limit=self.backlog_limit,
            )
        except Exception as exc:
            self._sample_error = f"{type(exc).__name__}: {brief(exc)}"
            raise
        self._sample, self._sample_error = (stats, time.monotonic()), ""
        return stats

    def health(self) -> dict[str, Any]:
        """A snapshot for health checks, shaped like ``Receiver.health()``: ``healthy``,
        ``reason``, ``state`` (``new``, ``running``, ``stopped``, ``closed``), counters,
        what fails (``claim_error``, ``publish_error``, ``mark_error``, ``failing_for``
        seconds), and the last sampled ``backlog``/``oldest_unsent_age`` (``backlog_age``:
        seconds since that sample, None before the first; ``backlog_error``: why the last
        sample failed). ``alive`` is False when :meth:`run` ended on an error, ``stalled``
        when a batch (publish, marks) has not come back for ``2 * lease + unhealthy_after``
        seconds; a claim that has not for ``unhealthy_after`` is a problem (the database
        does not answer), not ``stalled``; so is, with ``max_unsent_age``, a sampled oldest
        unsent row older than that. No database query."""
        now = time.monotonic()
        state = (
            "closed"
            if self._closed
            else "running"
            if self._running
            else "stopped"
            if self._ran
            else "new"
        )
        problems = self._progress.problems(now)
        failure = self._loop_failure
        if failure is not None:
            problems.append(f"the relay loop ended: {type(failure).__name__}: {brief(failure)}")
        claiming = now - (self._claiming_since or now)
        if claiming > self.unhealthy_after:  # a database not answering: not ``stalled``
            problems.append(f"a claim has not returned for {claiming:.0f}s")
        # Marking sent is retried until twice the lease: a batch may take that long and
        # still settle (a database outage, which no restart mends).
        oldest_batch = now - min(self._batches.values(), default=now)
        stalled = oldest_batch > 2 * self.lease + self.unhealthy_after
        if stalled:
            problems.append(f"a batch has been publishing or marking sent for {oldest_batch:.0f}s")
        sample = self._sample
        age = sample[0].oldest_unsent_age if sample else None
        if self.max_unsent_age is not None and age is not None and age > self.max_unsent_age:
            # Whichever relay holds them: rows of a key whose publishes keep failing while
            # others go out, or a backlog growing faster than the relays send it.
            problems.append(
                f"the oldest unsent row is {age:.0f}s old (max_unsent_age "
                f"{self.max_unsent_age:g}s): its publish keeps failing, or the relays fall "
                "behind"
            )
        healthy = state == "running" and not problems
        reasons = list(problems)
        if state != "running" and not reasons:
            reasons.append(f"relay is {state}")
        return {
            "relay": f"{self.table.fullname} -> {self.driver.features.name}",
            "state": state,
            "healthy": healthy,
            "reason": "; ".join(reasons),
            "alive": failure is None,
            "stalled": stalled,
            "published": self._published,
            "failed_batches": self._failed,
            "parked": self._parked,
            "in_flight": self._in_flight,
            "claim_error": self._progress.error("claiming"),
            "publish_error": self._progress.error("publishing"),
            "mark_error": self._progress.error("marking sent"),
            "failing_for": self._progress.failing_for(now),
            "backlog": sample[0].backlog if sample else None,
            "backlog_at_least": sample[0].backlog_at_least if sample else False,
            "oldest_unsent_age": age,
            "backlog_age": round(now - sample[1], 3) if sample else None,
            "backlog_error": self._sample_error,
            "problems": problems,
        }

    async def close(self) -> None:
        """Stop, let :meth:`run` settle the batches in flight (for up to ``lease`` seconds;
        then they are cancelled, their rows sent again later), and release the engine if
        the relay created it. Idempotent."""
        self.stop()
        self._closed = True
        run = self._run_task
        if run is not None and not run.done() and run is not asyncio.current_task():
            _, pending = await asyncio.wait({run}, timeout=self.lease)
            if pending:
                for task in list(self._deliveries):
                    task.cancel()
                await asyncio.wait({run}, timeout=min(self.lease, 5.0))
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> OutboxRelay:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


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
    row: exact, and seconds of work on a backlog of millions."""
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


async def requeue_parked(
    db: AsyncEngine, table: Table = outbox_table, ids: Sequence[int] | None = None
) -> int:
    """Put parked rows (all, or those of ``ids``) back in line to be relayed, once what
    made the target refuse them is fixed (a larger size limit, say); the rows requeued."""
    t = table
    stmt = (
        update(t)
        .where(t.c.sent_at.is_(None), t.c.lease_token == PARKED)
        .values(lease_until=None, lease_token=None)
    )
    if ids is None:
        async with db.begin() as conn:
            return int((await conn.execute(stmt)).rowcount)
    # One bound value per id: in slices, under the databases' limits (32,767 for
    # PostgreSQL's protocol, 32,766 or fewer for SQLite's), in one transaction.
    wanted = list(ids)
    total = 0
    async with db.begin() as conn:
        for start in range(0, len(wanted), _IDS_PER_STATEMENT):
            part = wanted[start : start + _IDS_PER_STATEMENT]
            total += int((await conn.execute(stmt.where(t.c.id.in_(part)))).rowcount)
    return total
