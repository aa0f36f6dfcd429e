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

This module is the loop; its parts live beside it: claiming and settling batches
(:mod:`.claims`), publishing one (:mod:`.publisher`), what ``health()`` reports and the
backlog sampling (:mod:`.monitor`), the backlog queries (:mod:`.stats`), the options'
checks (:mod:`.options`) and :func:`~hexa_event.outbox.requeue_parked` (:mod:`.requeue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from .._sql.engine import dispose_within, engine_for
from .._sql.listen import listen
from .._sql.names import check_table_dialect
from .._sql.problems import brief
from ..driver import Driver
from ..errors import ClosedError, ConfigurationError
from ..numbers import check_number, duration
from .claims import (
    Claimed,
    ClaimSettings,
    ClaimStrategy,
    LeaseClaims,
    LockClaims,
    Published,
    error_text,
    storable,
)
from .monitor import RelayMonitor, sample_every
from .options import check_relay_options
from .publisher import publish_batch
from .stats import BACKLOG_LIMIT, OutboxStats, any_ready, outbox_stats, ready_count
from .store import notify_channel, resolve_table

log = logging.getLogger(__name__)

HOLDING = "parking or holding back rows"
"""The step of settling a batch that writes its refused rows parked and its failed rows
on hold: failing, they come back when the lease ends, to be refused again."""

__all__ = ["BACKLOG_LIMIT", "OutboxRelay", "OutboxStats"]

LOGGED_IDS = 10
"""Row ids named per line when rows are parked (the rest counted)."""


def log_parked(parked: dict[int, str]) -> None:
    """One ERROR line per reason for a batch's parked rows, naming the first
    :data:`LOGGED_IDS` ids: a line per row was 1,000 lines for a batch refused by one
    cause, again every lease while the park itself could not be written."""
    by_reason: dict[str, list[int]] = {}
    for row_id, why in sorted(parked.items()):
        by_reason.setdefault(storable(why), []).append(row_id)
    for why, ids in by_reason.items():
        named = ", ".join(map(str, ids[:LOGGED_IDS]))
        more = f" and {len(ids) - LOGGED_IDS} more" if len(ids) > LOGGED_IDS else ""
        log.error(
            "outbox relay: parked %d row(s) (%s%s), they cannot be sent (see last_error): %s",
            len(ids),
            named,
            more,
            why,
        )


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
    publishing, marking sent or parking or holding back rows has failed every time (at
    least twice) for
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
        check_relay_options(
            batch_size=batch_size,
            concurrency=concurrency,
            pipeline=pipeline,
            lease=lease,
            retry_delay=retry_delay,
            poll_interval=poll_interval,
            unhealthy_after=unhealthy_after,
            stats_interval=stats_interval,
            backlog_limit=backlog_limit,
            max_unsent_age=max_unsent_age,
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
        check_table_dialect(table, self._dialect, owner="OutboxRelay")
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
        self.unhealthy_after = float(unhealthy_after)
        self.stats_interval = float(stats_interval)
        self.backlog_limit = backlog_limit
        self.max_unsent_age = None if max_unsent_age is None else float(max_unsent_age)
        self._monitor = RelayMonitor(self.unhealthy_after, log)
        self._callers: set[asyncio.Task[Any]] = set()
        """The tasks in :meth:`run`, :meth:`drain` or :meth:`run_once`: :meth:`close`
        waits for them."""
        self._deliveries: set[asyncio.Task[int]] = set()
        """The batches in flight, each its own task (:meth:`close` cuts them short)."""
        self._chain: asyncio.Future[bool] | None = None
        """Publish result of the last batch claimed: the next one publishes after it."""
        self._claiming = asyncio.Lock()
        """One claim at a time: each batch chains on the one claimed before it."""
        self._claim_task: asyncio.Future[Claimed | None] | None = None
        """The claim running now, if any (:meth:`close` cancels one that hangs)."""
        self._cut_short = ""
        """What :meth:`close` had to cut short (a claim that did not return), for health."""

    # -- one batch ---------------------------------------------------------------------------

    async def _claim(self) -> Claimed | None:
        """The next batch, None when nothing is ready or the relay is closed. The claim is
        a task of its own: :meth:`close` cancels one that has not returned (the database
        does not answer) once the lease is over, and the caller then gets None."""
        if self._closed:
            return None
        monitor = self._monitor
        monitor.claiming_since = time.monotonic()
        claim = self._claim_task = asyncio.ensure_future(self._claim_rows())
        try:
            batch = await claim
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if claim.cancelled() and self._closed and (caller is None or not caller.cancelling()):
                return None  # close() cut the claim short, not the caller's task
            raise
        except Exception as exc:
            monitor.progress.failed("claiming", exc)
            raise
        finally:
            monitor.claiming_since = None
            self._claim_task = None
        monitor.progress.succeeded("claiming")
        return batch

    async def _claim_rows(self) -> Claimed | None:
        await self._claims.prepare()
        return await self._claims.claim()

    async def _claim_next(
        self,
    ) -> tuple[Claimed, asyncio.Future[bool] | None, asyncio.Future[bool]] | None:
        """Claim the next batch; with it, the publish it waits for (the batch claimed
        before it, if still publishing) and the future of its own publish.

        Claims run one at a time, whoever asks (:meth:`run`, :meth:`drain`,
        :meth:`run_once`, at once even): each batch publishes after the one claimed before
        it, so a key's rows go out in order. The previous batch is read *before* claiming:
        a settled one is already released or published, which the claim then sees."""
        async with self._claiming:
            chain = self._chain
            previous = chain if chain is not None and not chain.done() else None
            batch = await self._claim()
            if batch is None:
                return None
            self._chain = published = asyncio.get_running_loop().create_future()
            return batch, previous, published

    async def _deliver(
        self,
        batch: Claimed,
        previous: asyncio.Future[bool] | None = None,
        published: asyncio.Future[bool] | None = None,
    ) -> int:
        """Publish after ``previous`` published (order), then mark sent and/or release."""
        n = len(batch.ids)
        progress = self._monitor.progress
        self._in_flight += n
        self._monitor.batches[batch.ids[0]] = time.monotonic()
        try:
            if previous is not None and not await asyncio.shield(previous):
                error = RuntimeError("an earlier batch of this relay failed to publish")
                result = Published(failed=batch.ids, error=error)
            else:
                result = await publish_batch(self.driver, batch, self.concurrency)
                if result.parked:
                    self._parked += len(result.parked)
                    log_parked(result.parked)
                if result.failed:
                    self._failed += 1
                    why = error_text(result.error)
                    progress.failed("publishing", why)
                    log.warning(
                        "outbox relay: publishing %d of %d rows failed (%s); retrying in %.1fs",
                        len(result.failed),
                        n,
                        why,
                        self.retry_delay,
                    )
                else:
                    progress.succeeded("publishing")
            marked = await self._claims.finish(batch, result, published)
            if batch.settle_error:  # parked or failed rows not written: they come back
                progress.failed(HOLDING, batch.settle_error)
            elif result.parked or result.failed:
                progress.succeeded(HOLDING)
            if not marked:
                if result.done:
                    why = self._claims.write_error or "the database refused the marks"
                    progress.failed("marking sent", why)
                return 0
            progress.succeeded("marking sent")
            self._published += len(result.done)
            return len(result.done)
        finally:
            self._monitor.batches.pop(batch.ids[0], None)
            await self._claims.forget(batch)
            if published is not None and not published.done():
                published.set_result(False)
            self._in_flight -= n
            self._wake.set()

    def _start_delivery(
        self, batch: Claimed, previous: asyncio.Future[bool] | None, published: asyncio.Future[bool]
    ) -> asyncio.Task[int]:
        task = asyncio.create_task(self._deliver(batch, previous, published))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return task

    def _enter(self, what: str) -> asyncio.Task[Any] | None:
        """Refuse work on a closed relay; count the calling task as one :meth:`close`
        waits for (None when it already is: a nested call)."""
        if self._closed:
            raise ClosedError(f"this outbox relay is closed: make a new one to {what}")
        task = asyncio.current_task()
        if task is None or task in self._callers:
            return None
        self._callers.add(task)
        return task

    async def run_once(self) -> int:
        """Claim one batch, publish it and mark it sent; the number of rows marked sent.

        Returns 0 when nothing is ready. Raises the database's error if the claim fails;
        a failed publish is not raised (the rows are released for a retry) and returns 0.
        Raises :class:`~hexa_event.errors.ClosedError` once the relay is closed.
        """
        entered = self._enter("relay again")
        try:
            return await self._once()
        finally:
            if entered is not None:
                self._callers.discard(entered)

    async def _once(self) -> int:
        claimed = await self._claim_next()
        if claimed is None:
            return 0
        delivery = self._start_delivery(*claimed)
        try:
            return await asyncio.shield(delivery)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                delivery.cancel()  # the caller is cancelled: its batch with it, settled
                with contextlib.suppress(asyncio.CancelledError):
                    await delivery
                raise
            return 0  # :meth:`close` cut the batch short: its rows are sent again later

    async def drain(self, max_seconds: float = 60.0) -> int:
        """Run batches until nothing is ready (or ``max_seconds``, or :meth:`close`); the
        rows sent.

        When nothing was claimed it looks whether a row is still ready (held back by per-key
        order behind another relay's rows, or a row waiting to retry), and waits for it,
        looking again every 0.1 s: each look reads one row, not a count of the backlog.
        Raises :class:`~hexa_event.errors.ClosedError` once the relay is closed, and
        :class:`~hexa_event.errors.ConfigurationError` for a ``max_seconds`` that is not a
        finite number from 0."""
        check_number("OutboxRelay.drain max_seconds", max_seconds)
        entered = self._enter("drain")
        try:
            deadline = time.monotonic() + max_seconds
            total = 0
            while time.monotonic() < deadline and not self._closed:
                sent = await self._once()
                if sent == 0:
                    if self._closed or not await any_ready(self.engine, self.table):
                        return total
                    self._wake.clear()  # set by the batch just settled: wait for a new one
                    await self._idle(min(self.poll_interval, 0.1))  # rows held elsewhere
                total += sent
            return total
        finally:
            if entered is not None:
                self._callers.discard(entered)

    async def backlog_ready(self) -> int:
        """Unsent rows that are not leased (claimable now, barring per-key order), counted
        up to ``backlog_limit``: a bounded read, whatever the backlog."""
        return await ready_count(self.engine, self.table, limit=self.backlog_limit)

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until :meth:`stop`; then finish the batches in flight and return.

        Database and broker failures are logged and retried with backoff; the loop only
        ends on :meth:`stop` (or :meth:`close`) or cancellation, which cancels the batches
        in flight too (their rows stay unsent: they are published again). On a closed
        relay it returns at once.
        """
        if self._running:
            raise RuntimeError("this relay is already running")
        if self._closed:  # stopped for good: as after stop()
            return
        entered = self._enter("run")
        self._running = self._ran = True
        self._monitor.loop_failure = None
        listener = (
            asyncio.create_task(self._listen(), name="hexa-outbox-listen")
            if self.listen and self._dialect == "postgresql"
            else None
        )
        sampler = asyncio.create_task(
            sample_every(self.stats, lambda: self.stats_interval, self._stop),
            name="hexa-outbox-stats",
        )
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
                try:
                    claimed = await self._claim_next()
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
                if claimed is None:
                    slots.release()
                    # A settling batch wakes us (its keys free up); otherwise poll.
                    await self._idle(self.poll_interval)
                    continue
                task = self._start_delivery(*claimed)
                task.add_done_callback(lambda _t: slots.release())
                task.add_done_callback(self._delivered)
        except asyncio.CancelledError:
            for task in tasks:  # the batches in flight too: released unsent, sent again
                task.cancel()
            raise
        except BaseException as exc:
            self._monitor.loop_failure = exc
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
            if entered is not None:
                self._callers.discard(entered)

    def _delivered(self, task: asyncio.Task[int]) -> None:
        """A batch of :meth:`run` ended: one that raised (a driver's ``BaseException``,
        say) is a failed publish, said and counted, not a silent task exception."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self._failed += 1
        why = error_text(exc)
        self._monitor.progress.failed("publishing", why)
        log.error("outbox relay: a batch failed (%s); its rows are sent again once free", why)

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
            self._monitor.sample_failed(exc)
            raise
        self._monitor.sampled(stats)
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
        problems, stalled = self._monitor.problems(
            now, lease=self.lease, max_unsent_age=self.max_unsent_age
        )
        healthy = state == "running" and not problems
        reasons = list(problems)
        if state != "running" and not reasons:
            reasons.append(f"relay is {state}")
        if self._cut_short:
            reasons.append(self._cut_short)
        return {
            "relay": f"{self.table.fullname} -> {self.driver.features.name}",
            "state": state,
            "healthy": healthy,
            "reason": "; ".join(reasons),
            "alive": self._monitor.loop_failure is None,
            "stalled": stalled,
            "published": self._published,
            "failed_batches": self._failed,
            "parked": self._parked,
            "in_flight": self._in_flight,
            **self._monitor.fields(now),
            "problems": problems,
        }

    async def close(self) -> None:
        """Stop; let :meth:`run`, :meth:`drain` and :meth:`run_once` settle the batches in
        flight (for up to ``lease`` seconds; then they are cancelled, their rows sent again
        later, and so is a claim the database has not answered: health and the log say so)
        and return; release the engine if the relay created it. A closed relay
        refuses to drain or run a batch again (:class:`~hexa_event.errors.ClosedError`);
        its :meth:`run` returns at once. Idempotent."""
        self.stop()
        self._closed = True
        current = asyncio.current_task()
        callers = {task for task in self._callers if not task.done() and task is not current}
        if callers:
            _, pending = await asyncio.wait(callers, timeout=self.lease)
            if pending:
                for task in list(self._deliveries):
                    task.cancel()
                self._cancel_claim()
                _, pending = await asyncio.wait(pending, timeout=min(self.lease, 5.0))
            if pending:
                log.error(
                    "outbox relay: close() gave up waiting for %d of run(), drain() and "
                    "run_once() after cancelling their batches; the engine is released "
                    "under them",
                    len(pending),
                )
        if self._owns_engine and not await dispose_within(self.engine, min(self.lease, 5.0)):
            log.error(
                "outbox relay: close() dropped the engine's connections unclosed: the "
                "database did not answer within %.1fs",
                min(self.lease, 5.0),
            )

    def _cancel_claim(self) -> None:
        """Cancel the claim running now, if any: the database did not answer it within the
        lease :meth:`close` waited. Nothing was claimed by it (or, committed just then,
        its rows' leases run out and they are claimed again); said in health and the log."""
        claim = self._claim_task
        if claim is None or claim.done():
            return
        since = self._monitor.claiming_since
        age = time.monotonic() - since if since is not None else 0.0
        self._cut_short = f"close() cancelled a claim that had not returned for {duration(age)}"
        log.error("outbox relay: %s (the database does not answer)", self._cut_short)
        claim.cancel()

    async def __aenter__(self) -> OutboxRelay:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
