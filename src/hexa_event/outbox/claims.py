"""How a relay claims unsent outbox rows and settles them: two strategies, one interface.

- :class:`LockClaims` (PostgreSQL default): the claim transaction stays open while the
  batch publishes; its ``FOR UPDATE`` row locks are the lease (a killed relay's rows are
  free at once, a hung one is cut off by ``idle_in_transaction_session_timeout``). One row
  write per event.
- :class:`LeaseClaims` (SQLite; PostgreSQL behind a transaction-pooling proxy): the claim
  writes ``lease_until``/``lease_token`` into the rows, under a short advisory lock on
  PostgreSQL so the per-key check sees the other relays' leases.

Both keep per-key order: a row is not claimed while an earlier unsent row of its key is held
by another relay or waits to retry after a failure.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import logging
import operator
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import compress, islice
from typing import Any

import msgspec
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Integer,
    String,
    Table,
    all_,
    and_,
    bindparam,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._sql.clock import utcnow
from .._sql.engine import GOODBYE_WAIT, let_go, transaction
from .._sql.problems import brief, escaped
from .._sql.turns import WriteTurns
from ..driver import RawRecord
from .sentlog import TIMESTAMP, has_sent_log, ids_match, mark_statements
from .store import decode_headers

log = logging.getLogger(__name__)

PARKED = "parked"
"""``lease_token`` of a parked row: the target refused it for good (too large, a channel it
cannot carry). It stays unsent with ``last_error`` saying why, is never claimed again and
does not hold back later rows of its key (as a dead-lettered event does not at a receiver);
:func:`~hexa_event.outbox.requeue_parked` puts it back."""
PARKED_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)

SQLITE_VARIABLES = 32_766
"""SQLite's default limit on the values one statement binds (``SQLITE_MAX_VARIABLE_NUMBER``)
since 3.32; 999 before. A build may set its own (Debian's: 250,000): a settle statement
refused for binding too many halves its slices until they fit."""
SETTLE_PARAMETERS = 16
"""Room for a settle statement's values besides its row ids (``now``, ``until``, ...)."""


Columns = tuple[list[int], list[str], list[str], list[bytes], list[bytes]]
"""A batch as columns: ids, channels, keys, headers (MessagePack), bodies; in id order."""


@dataclass(slots=True)
class Claimed:
    """A batch of rows claimed by this relay, in id order, held as columns."""

    columns: Columns
    """The claimed rows' ids, channels, keys, stored headers and bodies."""
    lease_until: float
    """Monotonic deadline of the lease."""
    conn: AsyncConnection | None = None
    """Lock mode: the open transaction whose row locks are the lease."""
    settle_error: str = ""
    """Why parking or holding back some of its rows failed ("" when it did not): the
    relay's health says so (the rows come back once the lease ends)."""
    _records: list[RawRecord] | None = None

    @property
    def ids(self) -> list[int]:
        return self.columns[0]

    @property
    def keys(self) -> list[str]:
        return self.columns[2]

    @property
    def records(self) -> list[RawRecord]:
        """The rows as records, decoded on first use: by the batch's publish, not its claim,
        so the relay claims the next batch while this one's rows are decoded."""
        if self._records is None:
            self._records = _records(self.columns)
        return self._records

    def readable(self) -> tuple[list[int], list[str], list[RawRecord], dict[int, str]]:
        """Ids, keys and records of the rows whose stored headers decode, and why the
        others do not (by id): headers that are not a MessagePack map of text to bytes
        (written by hand, or damaged) cannot be sent as stored."""
        try:
            return self.ids, self.keys, self.records, {}
        except msgspec.DecodeError:
            pass
        ids, channels, keys, headers, bodies = self.columns
        good: list[int] = []
        records: list[RawRecord] = []
        bad: dict[int, str] = {}
        for i, raw in enumerate(headers):
            try:
                decoded = decode_headers(raw)
            except msgspec.DecodeError as exc:
                bad[ids[i]] = f"its stored headers do not decode ({exc})"
                continue
            good.append(i)
            records.append(RawRecord(channels[i], keys[i], decoded, bodies[i]))
        return [ids[i] for i in good], [keys[i] for i in good], records, bad


@dataclass(slots=True)
class Published:
    """What publishing a batch (or a part of it) did, by row id."""

    done: list[int] = field(default_factory=list)
    parked: dict[int, str] = field(default_factory=dict)
    """Refused for good, with the reason."""
    failed: list[int] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class ClaimSettings:
    """What both strategies need to know of their relay."""

    engine: AsyncEngine
    table: Table
    batch_size: int
    lease: float
    retry_delay: float
    keep_sent: bool
    owner: str
    """The relay's lease token: its own leases never block its own claims."""


def storable(text: str) -> str:
    """``text`` as any database stores it (in ``last_error``) and any log takes it: a NUL
    (PostgreSQL's text refuses it) and lone surrogates (no UTF-8 holds them) escaped, at
    most 1,000 characters. An error's text is the broker's or the driver's, which may echo
    anything (a key, a header): stored as it came, it made every write settling the batch
    fail."""
    return escaped(text)[:1000]


def error_text(error: BaseException | None) -> str:
    """What ``last_error``, the health report and the log say of a failed publish."""
    return storable(f"{type(error).__name__}: {brief(error) if error else ''}")


class ClaimStrategy(abc.ABC):
    """Claims batches and settles them: published rows marked sent (moved to the sent log,
    or deleted), failed ones held back for ``retry_delay`` (their keys' later rows wait
    too)."""

    unsent_only = True
    """Whether settling must look for rows still unsent (another relay may have settled
    them since), or the rows are held by the claim until it settles them."""

    def __init__(self, settings: ClaimSettings) -> None:
        self.settings = settings
        self._postgres = settings.engine.dialect.name == "postgresql"
        self.turns = WriteTurns(sqlite=settings.engine.dialect.name == "sqlite")
        """Paces the write transactions on SQLite so the application gets the lock too."""
        t = settings.table
        self._park = self.hold_statement(
            t.c.sent_at.is_(None),
            lease_until=PARKED_UNTIL,
            lease_token=PARKED,
            attempts=t.c.attempts + 1,
        )
        """Parks the unsent rows ``:ids``: never claimed again, ``last_error`` says why."""
        self._marks: list[Any] = []
        """The statements that mark rows sent (:meth:`prepare` chooses them)."""
        self.write_error = ""
        """Why the last settle write that gave up failed ("" if none did)."""
        self.mark_mode = ""
        """``log`` (deleted, one sent-log line per batch), ``delete`` (``keep_sent=False``)
        or ``update`` (``sent_at`` set: an outbox without a sent log); set by
        :meth:`prepare`."""
        self.ids_per_statement: int | None = None
        """How many row ids one settle statement binds, None for all (PostgreSQL binds
        them as one array); set by :meth:`prepare`."""

    async def prepare(self) -> None:
        """Choose how published rows are marked sent, once: moved to the sent log, unless
        the outbox predates it (then ``sent_at`` is set, as older versions did)."""
        if self.mark_mode:
            return
        s = self.settings
        if not self._postgres:  # one bound value per id: a batch's ids in slices
            self.ids_per_statement = await sqlite_ids_per_statement(s.engine)
        how = "delete"
        if s.keep_sent:
            how = "log"
            if not await has_sent_log(s.engine, s.table):
                how = "update"
                log.warning(
                    "outbox relay: %s has no sent log yet, so sent rows are marked in place "
                    "(slower); run `hexa-event outbox migrate` (or outbox.migrate()) to add it",
                    s.table.fullname,
                )
        self._marks = mark_statements(
            s.table, how, postgres=self._postgres, unsent_only=self.unsent_only
        )
        self.mark_mode = how

    @abc.abstractmethod
    async def claim(self) -> Claimed | None:
        """The next batch of ready rows, or None when nothing is ready."""

    @abc.abstractmethod
    async def finish(
        self, batch: Claimed, result: Published, published: asyncio.Future[bool] | None
    ) -> bool:
        """Mark the rows ``result`` has done sent, park its parked ones and hold its failed
        ones back; resolve ``published`` (the next batch may publish) as soon as a later
        claim would see the held rows. Returns whether the done rows were marked."""

    async def forget(self, batch: Claimed) -> None:
        """The batch is over (settled or abandoned): release what it still holds."""
        del batch

    def hold_statement(self, *where: Any, **values: Any) -> Any:
        """An UPDATE of the rows ``:ids`` (and ``where``) holding them back: ``lease_until``
        set to ``:until``, ``last_error`` to ``:error``, and ``values`` (which win)."""
        t = self.settings.table
        held = {
            "lease_until": bindparam("until", type_=TIMESTAMP),
            "last_error": bindparam("error", type_=String()),
            **values,
        }
        return update(t).where(ids_match(t, self._postgres), *where).values(held)

    async def park(self, batch: Claimed, parked: Mapping[int, str], until: float) -> None:
        """Park rows (id -> why), one statement per reason, retrying until ``until``;
        ``batch.settle_error`` says why when that failed."""
        for why, ids in _by_reason(parked).items():
            if not await self.write([self._park], {"ids": ids, "error": why}, until):
                batch.settle_error = f"parking rows: {self.write_error}"

    async def hold(self, batch: Claimed, stmt: Any, params: dict[str, Any], until: float) -> None:
        """Hold the failed rows ``params["ids"]`` back; ``batch.settle_error`` says why
        when that failed (they are then claimed again once the lease ends)."""
        if not await self.write([stmt], params, until):
            batch.settle_error = f"holding failed rows back: {self.write_error}"

    async def write(self, stmts: Sequence[Any], params: dict[str, Any], until: float) -> bool:
        """Run settle statements on the rows ``params["ids"]`` in one transaction (on
        SQLite ``ids_per_statement`` ids at a time: one line of the sent log each; halved
        while SQLite says they are too many), retrying database failures until monotonic
        ``until``."""
        ids: list[int] = params["ids"]
        delay = 0.05
        while True:
            step = self.ids_per_statement or max(len(ids), 1)
            slices = [{**params, "ids": ids[n : n + step]} for n in range(0, len(ids), step)]
            try:
                async with self.turns.turn(), transaction(self.settings.engine) as conn:
                    for part in slices or [params]:
                        for stmt in stmts:
                            await conn.execute(stmt, part)
                return True
            except Exception as exc:
                if (
                    self.ids_per_statement
                    and self.ids_per_statement > 1
                    and too_many_variables(exc)
                ):
                    # A build with a lower limit than its version's default: fewer at once.
                    self.ids_per_statement //= 2
                    continue
                if time.monotonic() + delay > until:
                    self.write_error = error_text(exc)
                    log.error(
                        "outbox relay: could not settle %d rows (%s); they will be sent "
                        "again when their lease expires",
                        len(params["ids"]),
                        self.write_error,
                    )
                    return False
                log.warning("outbox relay: settling rows failed, retrying: %s", error_text(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


def too_many_variables(exc: BaseException) -> bool:
    """Whether SQLite refused a statement for binding more values than it allows."""
    return "too many SQL variables" in str(exc)


async def sqlite_ids_per_statement(engine: AsyncEngine) -> int:
    """How many row ids a settle statement may bind on ``engine``'s SQLite: its limit on
    bound values (by its version), less room for the statement's other values."""
    async with engine.connect() as conn:
        version = str((await conn.execute(text("SELECT sqlite_version()"))).scalar_one())
    numbers = tuple(int(n) for n in version.split(".")[:3] if n.isdigit())
    limit = SQLITE_VARIABLES if numbers >= (3, 32, 0) else 999
    return limit - SETTLE_PARAMETERS


def _by_reason(parked: Mapping[int, str]) -> dict[str, list[int]]:
    """Parked row ids by the ``last_error`` each gets (``parked: why``, storable)."""
    by_reason: dict[str, list[int]] = {}
    for row_id, why in parked.items():
        by_reason.setdefault(storable(f"parked: {why}"), []).append(row_id)
    return by_reason


def _records(columns: Columns) -> list[RawRecord]:
    """RawRecords of a batch's columns: ``map`` over the columns, no Python code per row."""
    _, channels, keys, headers, bodies = columns
    return list(map(RawRecord, channels, keys, map(decode_headers, headers), bodies))


def _columns(rows: Sequence[Any]) -> Columns:
    """(id, channel, key, headers, body) rows as columns, in id order."""
    ordered = sorted(rows, key=lambda r: r[0])
    ids, channels, keys, headers, bodies = (list(c) for c in zip(*ordered, strict=True))
    return ids, channels, keys, headers, bodies


def in_id_order(columns: Columns) -> Columns:
    """``columns`` sorted by id, if they are not already (checked without Python code per
    row). PostgreSQL aggregates the rows of a sorted subquery in that order; this makes it a
    check rather than a premise."""
    ids = columns[0]
    if all(map(operator.lt, ids, islice(ids, 1, None))):
        return columns
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return _select(columns, order)


def _select(columns: Columns, rows: Iterable[int]) -> Columns:
    """The rows of ``columns`` at the indexes ``rows``, in that order."""
    picked = list(rows)
    ids, channels, keys, headers, bodies = columns
    return (
        [ids[i] for i in picked],
        [channels[i] for i in picked],
        [keys[i] for i in picked],
        [headers[i] for i in picked],
        [bodies[i] for i in picked],
    )


class LeaseClaims(ClaimStrategy):
    """Leases written into the rows (any database)."""

    def __init__(self, settings: ClaimSettings) -> None:
        super().__init__(settings)
        t = settings.table
        # Per table (schema included): relays of another outbox never wait on this lock.
        self._lock_key = zlib.crc32(f"hexa-outbox:{t.fullname}".encode()) & 0x7FFFFFFF
        o = t.alias("o")
        p = t.alias("p")
        now = bindparam("now", type_=TIMESTAMP)
        # A row that holds back its key's later rows: unsent, leased by another relay or
        # waiting to retry (not parked, not this relay's own lease).
        holding = (
            p.c.sent_at.is_(None),
            p.c.lease_until >= now,
            or_(
                p.c.lease_token.is_(None),
                and_(p.c.lease_token != bindparam("token"), p.c.lease_token != PARKED),
            ),
        )
        ready = (o.c.sent_at.is_(None), or_(o.c.lease_until.is_(None), o.c.lease_until < now))
        limit = bindparam("limit", type_=Integer())
        if self._postgres:
            blocked = exists().where(p.c.key == o.c.key, p.c.id < o.c.id, *holding)
            candidates = select(o.c.id).where(*ready, ~blocked).order_by(o.c.id).limit(limit)
        else:
            # SQLite runs a correlated NOT EXISTS as an index scan of the key's earlier rows
            # for each candidate, reading each row to test its lease: quadratic in a batch
            # of one key's expired leases (10,000 rows: 26 s of CPU, holding the write lock).
            # The first holding row of each key, found once, is the same test: linear.
            first = (
                select(p.c.key, func.min(p.c.id).label("first"))
                .where(*holding)
                .group_by(p.c.key)
                .subquery("held")
            )
            candidates = (
                select(o.c.id)
                .select_from(o.outerjoin(first, first.c.key == o.c.key))
                .where(*ready, or_(first.c.first.is_(None), o.c.id < first.c.first))
                .order_by(o.c.id)
                .limit(limit)
            )
        values = {
            "lease_until": bindparam("until", type_=TIMESTAMP),
            "lease_token": bindparam("token", type_=String()),
            "attempts": t.c.attempts + 1,
        }
        returning = (t.c.id, t.c.channel, t.c.key, t.c.headers, t.c.body)
        if self._postgres:
            cte = candidates.with_for_update(skip_locked=True, of=o).cte("claim")
            self._claim: Any = (
                update(t).where(t.c.id == cte.c.id).values(values).returning(*returning)
            )
        else:
            # Looked for first by a read, which takes no write lock (WAL readers never wait):
            # a claim that finds nothing (nothing ready, every key held back) scanned the
            # whole backlog holding SQLite's one write lock. The UPDATE then runs the same
            # query bounded by the last row found: the same rows unless others moved
            # meanwhile, and what the one-statement claim would take up to there if so.
            self._last_ready = select(func.max(candidates.subquery("ready").c.id))
            bounded = candidates.where(o.c.id <= bindparam("last", type_=BigInteger()))
            self._claim = update(t).where(t.c.id.in_(bounded)).values(values).returning(*returning)
        mine = t.c.lease_token == bindparam("token")
        self._release = self.hold_statement(t.c.sent_at.is_(None), mine, lease_token=None)

    async def claim(self) -> Claimed | None:
        s = self.settings
        now = utcnow()
        deadline = time.monotonic() + s.lease
        params = {
            "now": now,
            "until": now + timedelta(seconds=s.lease),
            "token": s.owner,
            "limit": s.batch_size,
        }
        if not self._postgres:
            async with s.engine.connect() as conn:
                look = {k: params[k] for k in ("now", "token", "limit")}
                last = (await conn.execute(self._last_ready, look)).scalar()
                await conn.rollback()
            if last is None:
                return None
            params["last"] = last
        async with self.turns.turn(), transaction(s.engine) as conn:
            if self._postgres:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._lock_key})
            rows: Sequence[Any] = (await conn.execute(self._claim, params)).all()
        if not rows:
            return None
        return Claimed(columns=_columns(rows), lease_until=deadline)

    async def finish(
        self, batch: Claimed, result: Published, published: asyncio.Future[bool] | None
    ) -> bool:
        s = self.settings
        if result.parked:
            await self.park(batch, result.parked, batch.lease_until + s.lease)
        if result.failed:
            # Release before telling the next batch: a claim made after this point must see
            # these rows waiting to retry (they block their keys).
            await self.hold(
                batch,
                self._release,
                {
                    "ids": result.failed,
                    "token": s.owner,
                    "until": utcnow() + timedelta(seconds=s.retry_delay),
                    "error": error_text(result.error),
                },
                batch.lease_until,
            )
        if published is not None:
            published.set_result(not result.failed)
        if not result.done:
            return False
        # Published: mark sent. Keep trying past the lease (fewer duplicates), bounded.
        return await self.write(
            self._marks, {"ids": result.done, "now": utcnow()}, batch.lease_until + s.lease
        )


class LockClaims(ClaimStrategy):
    """Row locks of an open transaction as the lease (PostgreSQL)."""

    unsent_only = False

    def __init__(self, settings: ClaimSettings) -> None:
        super().__init__(settings)
        t = settings.table
        now = bindparam("now", type_=TIMESTAMP)
        ready = and_(t.c.sent_at.is_(None), or_(t.c.lease_until.is_(None), t.c.lease_until < now))
        # The batch straight off the index of unsent rows, locked in id order (LockRows
        # over the ordered scan), and handed back as one row of arrays: no row object per
        # row to build (or for the garbage collector to scan), records made by ``map``. No
        # CTE: materialising the bodies (spilling past work_mem) and sorting them again cost
        # PostgreSQL more than locking them.
        batch = (
            select(t.c.id, t.c.channel, t.c.key, t.c.headers, t.c.body)
            .where(ready)
            .order_by(t.c.id)
            .limit(bindparam("limit", type_=Integer()))
            .with_for_update(skip_locked=True)
            .subquery("batch")
        )
        self._lock = select(*(func.array_agg(column) for column in batch.c))
        parked: Any = literal_column(f"'{PARKED}'")  # a constant: no parameter
        not_parked = or_(t.c.lease_token.is_(None), t.c.lease_token != parked)
        # The unsent rows up to the batch's top: the rows skipped are the difference (see
        # ``claim``).
        upto = t.c.id <= bindparam("max", type_=BigInteger())
        self._span_count = (
            select(func.count()).select_from(t).where(t.c.sent_at.is_(None), upto, not_parked)
        )
        # Per key, the first unsent row up to the batch's top that is not this relay's: the
        # database filters and groups, so only blocked keys come back (not every row).
        not_mine = t.c.id != all_(bindparam("mine", type_=ARRAY(BigInteger)))
        self._blockers = (
            select(t.c.key, func.min(t.c.id))
            .where(t.c.sent_at.is_(None), upto, not_mine, not_parked)
            .group_by(t.c.key)
        )
        self._backoff = self.hold_statement(attempts=t.c.attempts + 1)
        self._lock_sql: str | None = None
        dialect = settings.engine.dialect
        if dialect.driver == "asyncpg" and dialect.paramstyle == "numeric_dollar":
            compiled = self._lock.compile(dialect=dialect)
            if list(compiled.positiontup or ()) == ["now", "limit"]:
                # The claim's arrays straight from asyncpg: no SQLAlchemy result processing
                # of each of their thousands of items.
                self._lock_sql = str(compiled)
        self._mine: dict[int, list[int]] = {}
        """This relay's batches in flight (locked by its transactions): their ids in order,
        by the first one."""
        self._committing = 0
        """Batches of ``_mine`` committing: their rows gone or not, a count cannot tell."""
        self._commits = 0
        """Commits begun so far: a count is trusted only if none began while it ran."""
        self._committed = asyncio.Event()
        self._committed.set()

    async def claim(self) -> Claimed | None:
        """Lock the first ready rows (SKIP LOCKED) in a transaction left open until settled.

        Rows skipped because another transaction holds them (another relay, or this one's
        batch in flight) block later rows of their keys: those are left out of the batch.
        """
        s = self.settings
        now = utcnow()
        deadline = time.monotonic() + s.lease
        conn = await s.engine.connect()
        try:
            await conn.begin()
            await conn.execute(
                text(f"SET LOCAL idle_in_transaction_session_timeout = {int(s.lease * 1000)}")
            )
            columns = await self._ready_rows(conn, now)
            if columns is not None:
                ids = columns[0]
                top = ids[-1]
                # Unsent rows up to ``top`` are ours (this claim, our batches in flight) or
                # held by others; only in the last case look at which keys they block. While
                # a batch of ours commits, its rows may be gone from the count or not, and
                # another relay's rows could make up for them: so count when no commit of
                # ours runs, and again if one began meanwhile.
                for _ in range(2):
                    await self._committed.wait()
                    commits = self._commits
                    visible = (await conn.execute(self._span_count, {"max": top})).scalar_one()
                    if commits == self._commits and self._only_ours(visible, len(ids), top):
                        break
                else:
                    columns = await self._drop_blocked(conn, columns, top)
            if columns is None:
                await conn.rollback()
                await conn.close()
                return None
        except BaseException as exc:
            # Cancelled (close() gave up on a database that does not answer): drop the
            # connection, a rollback would wait as long.
            await let_go(conn, wait=GOODBYE_WAIT if isinstance(exc, Exception) else 0)
            raise
        ids = columns[0]
        self._mine[ids[0]] = ids
        return Claimed(columns=columns, lease_until=deadline, conn=conn)

    def _only_ours(self, visible: int, claimed: int, top: int) -> bool:
        """Whether ``visible`` unsent rows up to ``top`` are exactly the ``claimed`` ones
        and those of our batches in flight. ``_mine`` read after the count can only have
        shrunk since (batches committed), so equal means no row of anyone else."""
        ours = claimed
        for ids in self._mine.values():
            ours += len(ids) if ids[-1] <= top else bisect.bisect_right(ids, top)
        return visible == ours

    async def _ready_rows(self, conn: AsyncConnection, now: Any) -> Columns | None:
        """The first ready rows, locked (SKIP LOCKED), in the claim's open transaction, as
        columns in id order; None when no row is ready."""
        limit = self.settings.batch_size
        apg: Any = None
        if self._lock_sql is not None:
            apg = (await conn.get_raw_connection()).driver_connection
        row: Any
        if apg is not None and hasattr(apg, "fetchrow"):
            row = await apg.fetchrow(self._lock_sql, now, limit)
        else:
            row = (await conn.execute(self._lock, {"now": now, "limit": limit})).one()
        if not row[0]:
            return None
        ids, channels, keys, headers, bodies = row
        return in_id_order((ids, channels, keys, headers, bodies))

    async def _drop_blocked(
        self, conn: AsyncConnection, columns: Columns, top: int
    ) -> Columns | None:
        """``columns`` without the rows whose keys have an earlier unsent row held by
        another (None if none is left)."""
        ids, keys = columns[0], columns[2]
        # This relay's own batches in flight don't block: they publish before this one.
        mine = sorted(set(ids).union(*self._mine.values()))
        params = {"max": top, "mine": mine}
        result = await conn.execute(self._blockers, params)
        first_blocked: dict[str, int] = {key: first for key, first in result}
        keep = [
            first_blocked.get(key, top + 1) > row_id for row_id, key in zip(ids, keys, strict=True)
        ]
        if not any(keep):
            return None
        return _select(columns, compress(range(len(ids)), keep))

    async def finish(
        self, batch: Claimed, result: Published, published: asyncio.Future[bool] | None
    ) -> bool:
        """Mark the done rows sent, park the parked, hold the failed, then commit (unlock).

        When all went out the next batch may publish at once: this one's rows stay locked
        until the commit settles them, so no claim can take them (or later rows of their
        keys) meanwhile. When some failed, the next batch learns it only once they are on
        hold (committed, no longer ours in flight): a claim made after that sees them and
        holds back their keys' later rows, where one made before the commit took the
        locked rows for ours, about to publish, and let later rows of their keys through.
        """
        if published is not None and not result.failed and not published.done():
            published.set_result(True)
        try:
            return await self._settle(batch, result)
        finally:
            if published is not None and not published.done():
                published.set_result(not result.failed)

    async def _settle(self, batch: Claimed, result: Published) -> bool:
        s = self.settings
        done, failed, parked = result.done, result.failed, result.parked
        conn = batch.conn
        assert conn is not None
        now = utcnow()

        hold = {
            "ids": failed,
            "until": now + timedelta(seconds=s.retry_delay),
            "error": error_text(result.error),
        }
        reasons = _by_reason(parked)
        try:
            for why, ids in reasons.items():  # in the claim's transaction: it holds the rows
                await conn.execute(self._park, {"ids": ids, "error": why})
            if failed:
                await conn.execute(self._backoff, hold)
            if done:
                for stmt in self._marks:
                    await conn.execute(stmt, {"ids": done, "now": now})
            self._committing += 1
            self._commits += 1
            self._committed.clear()
            try:
                await conn.commit()
            finally:
                # Sent or on hold now (or, the commit failing, unlocked: anyone's until
                # written below): later claims see them as they are, not as ours in flight.
                self._mine.pop(batch.ids[0], None)
                self._committing -= 1
                if not self._committing:
                    self._committed.set()
        except Exception as exc:
            self._mine.pop(batch.ids[0], None)
            log.warning("outbox relay: settling rows failed, retrying: %s", error_text(exc))
            await let_go(conn, wait=GOODBYE_WAIT)
            if parked:
                await self.park(batch, parked, batch.lease_until + s.lease)
            if failed:
                await self.hold(batch, self._backoff, hold, batch.lease_until)
            return bool(done) and await self.write(
                self._marks, {"ids": done, "now": now}, batch.lease_until + s.lease
            )
        return bool(done)

    async def forget(self, batch: Claimed) -> None:
        self._mine.pop(batch.ids[0], None)
        conn = batch.conn
        if conn is not None:
            # Still in its transaction: cut short, unsettled; drop it rather than wait for a
            # rollback a database that does not answer never sends.
            await let_go(conn, wait=0 if conn.in_transaction() else GOODBYE_WAIT)
