"""The receive side of the SQL driver: a group member leasing virtual partitions.

How a member works:

- Each channel's log is split into virtual partitions (hash of the key). A group keeps one
  position per (channel, partition) in ``hexa_positions``; members of the group lease
  partitions there (``owner``, ``lease_until_ms``), as Kafka's group members own partitions.
  A key's records live in one partition, so one member at a time reads them, in order.
- Heartbeats (every ``heartbeat_interval``) renew the leases, register the member per
  channel in ``hexa_members`` and rebalance: each member aims at ``ceil(P / members)``
  partitions of a channel, claims free or expired ones, and gives back extras once their
  handed-out deliveries are settled. A member that dies stops renewing; its partitions are
  claimed by the others after ``lease_ttl`` and read again from the stored position.
- Reads fetch, per leased partition, the rows after the member's in-memory cursor. On
  PostgreSQL rows are ordered by (inserting transaction id, id) and only rows of
  transactions older than the oldest running one are read
  (``txid < pg_snapshot_xmin(pg_current_snapshot())``), so a transaction that took an id
  early and commits late is never skipped. SQLite has one writer at a time, so ids follow
  commit order.
- Deliveries may be settled in any order (``ack``/``nack`` only mark them); ``settle``
  writes a batch in one transaction, and the stored position only moves over a settled
  prefix (fenced by the lease owner).
- ``nack(delay)`` with a delay writes the record to ``hexa_redeliveries`` (due at now +
  delay) in that transaction and lets the position move on: the group gets it again when
  due, even if this process dies. ``nack()`` without delay hands it out again from memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import and_, bindparam, func, or_, select, text

from ...driver import (
    Delivery,
    Outcome,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from ...errors import ConfigurationError

if TYPE_CHECKING:
    from .driver import SqlDriver

logger = logging.getLogger(__name__)

Pos = tuple[int, int]
"""A position in a partition: (inserting transaction id, row id); txid is 0 on SQLite."""

_decode_headers = msgspec.msgpack.Decoder(dict[str, bytes]).decode
_CHUNK = 64  # partitions per fetch statement
_CLOSE_TIMEOUT = 15.0
_COLUMNS = "id, txid, channel, part, msg_key, headers, body, created_ms, visible_ms"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def fetch_sql(dialect: str, count: int) -> str:
    """One statement reading up to ``:n`` rows after a cursor from each of ``count``
    partitions (bind params ``c<i>``, ``p<i>``, ``t<i>``, ``i<i>``)."""
    parts: list[str] = []
    for i in range(count):
        if dialect == "postgresql":
            where = (
                f"channel = :c{i} AND part = :p{i} AND (txid, id) > (:t{i}, :i{i}) "
                "AND txid < (SELECT x FROM h) ORDER BY txid, id"
            )
        else:
            where = f"channel = :c{i} AND part = :p{i} AND id > :i{i} ORDER BY id"
        parts.append(f"SELECT * FROM (SELECT {_COLUMNS} FROM hexa_log WHERE {where} LIMIT :n) s{i}")
    union = " UNION ALL ".join(parts)
    if dialect == "postgresql":
        horizon = "(pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"
        return f"WITH h AS MATERIALIZED (SELECT {horizon} AS x) {union}"
    return union


class _Part:
    """One leased (channel, partition): cursor, settled prefix, deliveries not yet settled."""

    __slots__ = (
        "blocked_until_ms",
        "channel",
        "committed",
        "cursor",
        "dirty",
        "drained",
        "number",
        "outstanding",
        "owned",
        "redeliveries",
        "releasing",
    )

    def __init__(self, channel: str, number: int, pos: Pos) -> None:
        self.channel = channel
        self.number = number
        self.cursor: Pos = pos
        """The last row read into memory."""
        self.committed: Pos = pos
        """Every row up to here is settled: the position to store."""
        self.outstanding: OrderedDict[Pos, bool] = OrderedDict()
        """Rows read and not yet covered by ``committed``, in order, with settled flags."""
        self.dirty = False
        self.drained = False
        self.owned = True
        self.releasing = False
        self.redeliveries = 0
        self.blocked_until_ms = 0

    def settle(self, pos: Pos) -> None:
        od = self.outstanding
        if pos not in od:
            return
        od[pos] = True
        advanced = False
        while od:
            first = next(iter(od))
            if not od[first]:
                break
            od.popitem(last=False)
            self.committed = first
            advanced = True
        if advanced:
            self.dirty = True

    @property
    def idle(self) -> bool:
        return not self.outstanding and self.redeliveries == 0


class SqlDelivery(Delivery):
    """A row handed to this member. ``native`` is ``{"log_id", "txid", "partition"}``.

    ``part``, ``pos`` and ``redelivered`` say where the row came from (its partition state,
    its position, and whether it came from ``hexa_redeliveries``); ``applied`` is set once
    :meth:`SqlSubscription.settle` took its outcome into account (a second call is a no-op).
    """

    __slots__ = ("applied", "part", "pos", "redelivered", "sub")

    def __init__(
        self,
        sub: SqlSubscription,
        part: _Part,
        pos: Pos,
        record: RawRecord,
        *,
        redelivered: bool,
        delivery_count: int,
        timestamp: float,
    ) -> None:
        super().__init__(
            record,
            coordinates=f"{record.channel}-{part.number}-{pos[1]}",
            delivery_count=delivery_count,
            timestamp=timestamp,
        )
        self.sub = sub
        self.part = part
        self.pos = pos
        self.redelivered = redelivered
        self.applied = False

    @property
    def native(self) -> object:
        return {"log_id": self.pos[1], "txid": self.pos[0], "partition": self.part.number}

    def on_settle(self) -> None:
        self.sub.on_settled()


class SqlSubscription(Subscription):
    """A member of one consumer group; see the module docstring for how it works."""

    def __init__(self, driver: SqlDriver, spec: SubscriptionSpec, partitions: int) -> None:
        self._driver = driver
        self._spec = spec
        self._group = spec.group
        self._opts = driver.options
        self._partitions = partitions
        self.member_id = uuid.uuid4().hex
        try:
            self._pattern = re.compile(spec.pattern) if spec.pattern else None
        except re.error as exc:
            raise ConfigurationError(
                f"subscription pattern {spec.pattern!r} is not a valid regular expression: {exc}"
            ) from exc
        self._explicit = tuple(dict.fromkeys(spec.channels))
        self._channels: set[str] = set(self._explicit)
        self._initialized: set[str] = set()
        self._parts: dict[tuple[str, int], _Part] = {}
        self._buffer: deque[SqlDelivery] = deque()
        self._handed_out = 0
        self._inflight_redeliveries: set[int] = set()
        self._acked_redeliveries: set[int] = set()
        self._pending_redeliveries: dict[int, dict[str, Any]] = {}
        self._flush_lock = asyncio.Lock()
        self._heartbeat_error = ""
        self._read_error = ""
        self._channel_gen: dict[str, int] = {}
        self._redelivery_due = 0.0
        self._next_heartbeat = 0.0
        self._idle_delay = self._opts.poll_interval
        self._full_poll = True
        self._discover = False
        self._wake = asyncio.Event()
        self._poke = asyncio.Event()
        self._poll_task: asyncio.Task[bool] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._last_warning = 0.0

    def __repr__(self) -> str:
        return (
            f"SqlSubscription(group={self._group!r}, member={self.member_id[:8]}, "
            f"partitions={len(self._parts)})"
        )

    def status(self) -> SubscriptionStatus:
        """The virtual partitions held (``channel-N``) and the current read or upkeep error."""
        return SubscriptionStatus(
            assignment=tuple(f"{channel}-{number}" for channel, number in sorted(self._parts)),
            error=self._read_error or self._heartbeat_error,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Join the group: first heartbeat (claims partitions), then background upkeep."""
        await self._heartbeat()
        self._next_heartbeat = time.monotonic() + self._opts.heartbeat_interval
        self._task = asyncio.create_task(
            self._maintain(), name=f"hexa-event:sql-member:{self._group}"
        )

    async def close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close())
        # Shielded: a cancelled close still stores positions and leaves the group. Bounded:
        # with the database unreachable, the leases simply expire.
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.shield(self._close_task)
        except TimeoutError:
            logger.warning(
                "SQL driver: group %s: leaving the group took over %.0fs; continuing in the "
                "background (the leases expire after %.0fs anyway)",
                self._group,
                _CLOSE_TIMEOUT,
                self._opts.lease_ttl,
            )

    async def _close(self) -> None:
        self._closed = True
        self._wake.set()
        self._poke.set()
        # Let upkeep and a running read finish rather than cancelling them midway.
        for task in (self._task, self._poll_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        parts = list(self._parts.values())
        try:
            await self._flush(release=parts)
            async with self._driver.writing() as conn:
                members = self._driver.table("hexa_members")
                await conn.execute(
                    members.delete().where(
                        members.c.group_name == self._group,
                        members.c.member_id == self.member_id,
                    )
                )
        except Exception as exc:
            logger.warning(
                "SQL driver: group %s could not store its positions on close (%s); "
                "unacknowledged deliveries will be redelivered after the lease expires",
                self._group,
                self._driver.error("close", exc),
            )
        for part in parts:
            part.owned = False
        self._parts.clear()
        self._buffer.clear()
        self._driver._forget(self)

    # -- fetch ----------------------------------------------------------------------------

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        while not self._closed:
            out = self._take(max_count)
            if out:
                return out
            room = self._spec.prefetch - self._handed_out - len(self._buffer)
            found = False
            if room > 0:
                self._wake.clear()
                task = self._poll_task
                if task is None or task.done():
                    task = self._poll_task = asyncio.create_task(
                        self._poll_safely(room, self._full_poll)
                    )
                # Shielded: a cancelled fetch leaves the read to finish into the buffer
                # (cancelling a database call midway can wedge the connection).
                found = await asyncio.shield(task)
                if self._buffer:
                    self._idle_delay = self._opts.poll_interval
                    continue
                if found:
                    continue
            try:
                wait = self._wait_time() if room > 0 else self._opts.max_poll_interval
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that races with the event, and fetch would never return.
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                self._full_poll = True
                self._idle_delay = min(self._idle_delay * 2, self._opts.max_poll_interval)
            else:
                self._full_poll = False
                self._idle_delay = self._opts.poll_interval
        return []

    async def _poll_safely(self, room: int, full: bool) -> bool:
        try:
            found = await self._poll(room, full)
        except Exception as exc:
            self._read_error = str(self._driver.error("reading the log", exc))
            self._warn("reading the log", exc)
            self._idle_delay = self._opts.max_poll_interval
            if self._redelivery_due:
                self._redelivery_due = time.monotonic() + self._idle_delay
            return False
        self._read_error = ""
        return found

    def _take(self, max_count: int) -> list[Delivery]:
        limit = min(max_count, self._spec.prefetch - self._handed_out)
        out: list[Delivery] = []
        buffer = self._buffer
        while buffer and len(out) < limit:
            delivery = buffer.popleft()
            part = delivery.part
            if not part.owned or part.releasing:
                continue
            out.append(delivery)
        self._handed_out += len(out)
        return out

    def _wait_time(self) -> float:
        delay = self._idle_delay
        now_ms = _now_ms()
        for part in self._parts.values():
            if part.blocked_until_ms > now_ms:
                delay = min(delay, (part.blocked_until_ms - now_ms) / 1000)
        if self._redelivery_due:
            delay = min(delay, self._redelivery_due - time.monotonic())
        return max(0.001, delay)

    async def _poll(self, room: int, full: bool) -> bool:
        now_ms = _now_ms()
        found = False
        if self._redelivery_due and time.monotonic() >= self._redelivery_due:
            found = await self._poll_redeliveries(room, now_ms) > 0
            room -= len(self._buffer)
        if room <= 0:
            return found
        parts = [
            p
            for p in self._parts.values()
            if not p.releasing
            and p.blocked_until_ms <= now_ms
            and (full or not p.drained or p.blocked_until_ms)
        ]
        if not parts:
            return found
        self._full_poll = False
        per = max(16, math.ceil(room / len(parts)))
        for start in range(0, len(parts), _CHUNK):
            chunk = parts[start : start + _CHUNK]
            if await self._poll_log(chunk, per, now_ms):
                found = True
        return found

    async def _poll_log(self, parts: list[_Part], per: int, now_ms: int) -> bool:
        dialect = self._driver.dialect
        params: dict[str, Any] = {"n": per}
        for i, part in enumerate(parts):
            params[f"c{i}"] = part.channel
            params[f"p{i}"] = part.number
            params[f"i{i}"] = part.cursor[1]
            if dialect == "postgresql":
                params[f"t{i}"] = part.cursor[0]
        gens = {p.channel: self._channel_gen.get(p.channel, 0) for p in parts}
        cursors = [p.cursor for p in parts]
        async with self._driver.reading() as conn:
            result = await conn.execute(text(fetch_sql(dialect, len(parts))), params)
            rows = result.all()
        by_part: dict[tuple[str, int], list[Any]] = {}
        for row in rows:
            key = (row[2], row[3])
            bucket = by_part.get(key)
            if bucket is None:
                by_part[key] = [row]
            else:
                bucket.append(row)
        found = False
        buffer = self._buffer
        for part, cursor in zip(parts, cursors, strict=True):
            if not part.owned or part.releasing or part.cursor != cursor:
                continue
            part_rows = by_part.get((part.channel, part.number), [])
            unchanged = self._channel_gen.get(part.channel, 0) == gens[part.channel]
            part.drained = len(part_rows) < per and unchanged
            part.blocked_until_ms = 0
            if any((a[1], a[0]) >= (b[1], b[0]) for a, b in itertools.pairwise(part_rows)):
                part_rows.sort(key=lambda r: (r[1], r[0]))
            outstanding = part.outstanding
            for log_id, txid, channel, _, key, headers, body, created_ms, visible_ms in part_rows:
                pos: Pos = (txid, log_id)
                if pos <= part.cursor:
                    continue
                if visible_ms > now_ms:
                    part.blocked_until_ms = visible_ms
                    part.drained = False
                    break
                outstanding[pos] = False
                part.cursor = pos
                buffer.append(
                    SqlDelivery(
                        self,
                        part,
                        pos,
                        RawRecord(channel, key, _decode_headers(headers), bytes(body)),
                        redelivered=False,
                        delivery_count=1,
                        timestamp=created_ms / 1000,
                    )
                )
                found = True
        return found

    async def _poll_redeliveries(self, room: int, now_ms: int) -> int:
        r = self._driver.table("hexa_redeliveries")
        p = self._driver.table("hexa_positions")
        log = self._driver.table("hexa_log")
        query = (
            select(
                r.c.log_id,
                r.c.attempts,
                log.c.txid,
                log.c.channel,
                log.c.part,
                log.c.msg_key,
                log.c.headers,
                log.c.body,
                log.c.created_ms,
            )
            .select_from(
                r.join(
                    p,
                    and_(
                        p.c.group_name == r.c.group_name,
                        p.c.channel == r.c.channel,
                        p.c.part == r.c.part,
                    ),
                ).join(log, log.c.id == r.c.log_id)
            )
            .where(
                r.c.group_name == self._group,
                p.c.owner == self.member_id,
                r.c.visible_ms <= now_ms,
            )
            .order_by(r.c.visible_ms)
            .limit(room + len(self._inflight_redeliveries))
        )
        async with self._driver.reading() as conn:
            rows = (await conn.execute(query)).all()
        self._redelivery_due = time.monotonic() + (
            0.0 if len(rows) >= room else self._opts.heartbeat_interval
        )
        count = 0
        for row in rows:
            part = self._parts.get((row.channel, row.part))
            if part is None or not part.owned or part.releasing:
                continue
            if row.log_id in self._inflight_redeliveries:
                continue
            self._inflight_redeliveries.add(row.log_id)
            part.redeliveries += 1
            record = RawRecord(
                channel=row.channel,
                key=row.msg_key,
                headers=_decode_headers(row.headers),
                body=bytes(row.body),
            )
            self._buffer.append(
                SqlDelivery(
                    self,
                    part,
                    (row.txid, row.log_id),
                    record,
                    redelivered=True,
                    delivery_count=row.attempts,
                    timestamp=row.created_ms / 1000,
                )
            )
            count += 1
        return count

    # -- settling -------------------------------------------------------------------------

    def on_settled(self) -> None:
        """A delivery was acked or nacked: room for one more (no I/O, never raises)."""
        if not self._closed:
            self._handed_out -= 1
            self._wake.set()

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Take the outcomes into account, then write every pending settlement at once.

        In one transaction: the positions of partitions whose settled prefix grew (never
        past an unsettled delivery), ``hexa_redeliveries`` rows for delayed nacks, and the
        deletion of acked redeliveries. A nack without delay hands the record out again
        from memory. On failure everything stays pending and the next call (or close)
        writes it; a delivery already taken into account is not applied twice.
        """
        delays: list[float] = []
        for delivery in deliveries:
            if not isinstance(delivery, SqlDelivery) or delivery.sub is not self:
                raise ConfigurationError("settle() got a delivery of another subscription")
            if delivery.applied or delivery.outcome is None:
                continue
            delivery.applied = True
            if not self._closed:
                self._apply(delivery, delays)
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        for delay in delays:
            loop.call_later(delay, self._redelivery_now)
        await self._flush()
        if any(p.releasing for p in self._parts.values()):
            self._poke.set()

    def _apply(self, delivery: SqlDelivery, delays: list[float]) -> None:
        part = delivery.part
        log_id = delivery.pos[1]
        if delivery.outcome is Outcome.ACK:
            if delivery.redelivered:
                part.redeliveries -= 1
                self._inflight_redeliveries.discard(log_id)
                self._pending_redeliveries.pop(log_id, None)
                self._acked_redeliveries.add(log_id)
            else:
                part.settle(delivery.pos)
            return
        delay = delivery.delay
        if delay <= 0 and part.owned and not part.releasing:
            # Hand it out again from memory; its position stays unsettled meanwhile.
            self._buffer.appendleft(
                SqlDelivery(
                    self,
                    part,
                    delivery.pos,
                    delivery.record,
                    redelivered=delivery.redelivered,
                    delivery_count=delivery.delivery_count + 1,
                    timestamp=delivery.timestamp or 0.0,
                )
            )
            self._wake.set()
            return
        if part.owned:
            self._acked_redeliveries.discard(log_id)
            self._pending_redeliveries[log_id] = {
                "group_name": self._group,
                "log_id": log_id,
                "channel": delivery.record.channel,
                "part": part.number,
                "visible_ms": _now_ms() + int(delay * 1000),
                "attempts": delivery.delivery_count + 1,
            }
        if delivery.redelivered:
            part.redeliveries -= 1
            self._inflight_redeliveries.discard(log_id)
        else:
            part.settle(delivery.pos)
        delays.append(max(0.0, delay))

    def _has_unflushed(self) -> bool:
        return (
            bool(self._acked_redeliveries)
            or bool(self._pending_redeliveries)
            or any(p.dirty for p in self._parts.values())
        )

    async def _flush(self, release: Sequence[_Part] = ()) -> None:
        """Write pending settlements (and release ``release``) in one transaction.

        Raises :class:`DriverError`; what was not written stays pending.
        """
        async with self._flush_lock:
            releasing = set(map(id, release))
            kept = [(p, p.committed) for p in self._parts.values() if p.dirty]
            kept = [(p, pos) for p, pos in kept if id(p) not in releasing]
            released = [(p, p.committed) for p in release]
            redeliveries = dict(self._pending_redeliveries)
            acked = set(self._acked_redeliveries)
            if not (kept or released or redeliveries or acked):
                return
            try:
                async with self._driver.writing() as conn:
                    if redeliveries:
                        await self._upsert_redeliveries(conn, list(redeliveries.values()))
                    if acked:
                        r = self._driver.table("hexa_redeliveries")
                        await conn.execute(
                            r.delete().where(
                                r.c.group_name == self._group, r.c.log_id.in_(sorted(acked))
                            )
                        )
                    await self._store_positions(conn, kept, release=False)
                    await self._store_positions(conn, released, release=True)
            except Exception as exc:
                raise self._driver.error("storing settlements", exc) from exc
            for part, pos in (*kept, *released):
                if part.committed == pos:
                    part.dirty = False
            for log_id, row in redeliveries.items():
                if self._pending_redeliveries.get(log_id) is row:
                    del self._pending_redeliveries[log_id]
            self._acked_redeliveries -= acked

    async def _upsert_redeliveries(self, conn: Any, rows: list[dict[str, Any]]) -> None:
        r = self._driver.table("hexa_redeliveries")
        stmt = self._driver.dialect_insert(r)
        stmt = stmt.on_conflict_do_update(
            index_elements=["group_name", "log_id"],
            set_={"visible_ms": stmt.excluded.visible_ms, "attempts": stmt.excluded.attempts},
        )
        await conn.execute(stmt, rows)

    def _redelivery_now(self) -> None:
        self._redelivery_due = time.monotonic()
        self._wake.set()

    # -- notifications from the driver ------------------------------------------------------

    def notify(self, channels: set[str] | None) -> None:
        """Rows were committed to ``channels`` (None: unknown channels)."""
        if self._closed:
            return
        if channels is None:
            for channel in self._channels:
                self._channel_gen[channel] = self._channel_gen.get(channel, 0) + 1
            for part in self._parts.values():
                part.drained = False
            self._wake.set()
            return
        hit = False
        for channel in channels:
            if channel in self._channels:
                hit = True
                self._channel_gen[channel] = self._channel_gen.get(channel, 0) + 1
            elif self._pattern is not None and self._pattern.fullmatch(channel):
                self._discover = True
                self._poke.set()
        if hit:
            for part in self._parts.values():
                if part.channel in channels:
                    part.drained = False
            self._wake.set()

    # -- upkeep: heartbeats, rebalancing, ack flushes ----------------------------------------

    async def _maintain(self) -> None:
        opts = self._opts
        while not self._closed:
            if time.monotonic() >= self._next_heartbeat or self._discover:
                self._discover = False
                try:
                    await self._heartbeat()
                    self._heartbeat_error = ""
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._heartbeat_error = str(self._driver.error("heartbeat", exc))
                    self._warn("heartbeat", exc)
                self._next_heartbeat = time.monotonic() + opts.heartbeat_interval
            try:
                await self._release_idle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._warn("releasing partitions", exc)
            timeout = max(0.0, self._next_heartbeat - time.monotonic())
            self._poke.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._poke.wait()
            except TimeoutError:
                continue

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 5.0:
            self._last_warning = now
            logger.warning(
                "SQL driver: group %s: %s failed (%s); retrying",
                self._group,
                what,
                self._driver.error(what, exc),
            )

    async def _store_positions(
        self, conn: Any, parts: Sequence[tuple[_Part, Pos]], *, release: bool
    ) -> None:
        """Write the given positions of ``parts`` (fenced by ownership); release if asked."""
        if not parts:
            return
        positions = self._driver.table("hexa_positions")
        values: dict[str, Any] = {"pos_tx": bindparam("b_tx"), "pos_id": bindparam("b_id")}
        if release:
            values.update(owner=None, lease_until_ms=0)
        stmt = (
            positions.update()
            .where(
                positions.c.group_name == bindparam("b_group"),
                positions.c.channel == bindparam("b_channel"),
                positions.c.part == bindparam("b_part"),
                positions.c.owner == bindparam("b_owner"),
            )
            .values(**values)
        )
        await conn.execute(
            stmt,
            [
                {
                    "b_group": self._group,
                    "b_channel": p.channel,
                    "b_part": p.number,
                    "b_owner": self.member_id,
                    "b_tx": pos[0],
                    "b_id": pos[1],
                }
                for p, pos in parts
            ],
        )

    async def _release_idle(self) -> None:
        idle = [p for p in self._parts.values() if p.releasing and p.idle]
        if not idle:
            return
        await self._flush(release=idle)
        for part in idle:
            part.owned = False
            self._parts.pop((part.channel, part.number), None)
        logger.debug("group %s: released %d partitions", self._group, len(idle))

    def _purge_buffer(self, part: _Part) -> None:
        """Drop ``part``'s deliveries that were read but never handed out."""
        kept: deque[SqlDelivery] = deque()
        for delivery in self._buffer:
            if delivery.part is not part:
                kept.append(delivery)
            elif delivery.redelivered:
                part.redeliveries -= 1
                self._inflight_redeliveries.discard(delivery.pos[1])
            else:
                part.outstanding.pop(delivery.pos, None)
        self._buffer = kept
        if not part.outstanding:
            part.cursor = part.committed

    def _lose(self, key: tuple[str, int]) -> None:
        part = self._parts.pop(key, None)
        if part is None:
            return
        self._purge_buffer(part)
        part.owned = False
        logger.info(
            "SQL driver: group %s lost partition %s/%d (lease expired); another member "
            "consumes it now",
            self._group,
            key[0],
            key[1],
        )

    async def _heartbeat(self) -> None:
        driver = self._driver
        opts = self._opts
        positions = driver.table("hexa_positions")
        members = driver.table("hexa_members")
        log = driver.table("hexa_log")
        now = _now_ms()
        expires = now + int(opts.lease_ttl * 1000)
        if self._pattern is not None:
            channels_table = driver.table("hexa_channels")
            async with driver.reading() as conn:
                names = (await conn.execute(select(channels_table.c.channel))).scalars().all()
            matched = {name for name in names if self._pattern.fullmatch(name)}
            self._channels = set(self._explicit) | matched
        channels = sorted(self._channels)
        new = [c for c in channels if c not in self._initialized]
        async with driver.writing() as conn:
            if channels:
                upsert = driver.dialect_insert(members)
                upsert = upsert.on_conflict_do_update(
                    index_elements=["group_name", "channel", "member_id"],
                    set_={"expires_ms": upsert.excluded.expires_ms},
                )
                await conn.execute(
                    upsert,
                    [
                        {
                            "group_name": self._group,
                            "channel": c,
                            "member_id": self.member_id,
                            "expires_ms": expires,
                        }
                        for c in channels
                    ],
                )
            for channel in new:
                start: Pos = (0, 0)
                if self._spec.start == "latest":
                    row = (
                        await conn.execute(
                            select(
                                func.coalesce(func.max(log.c.txid), 0),
                                func.coalesce(func.max(log.c.id), 0),
                            ).where(log.c.channel == channel)
                        )
                    ).one()
                    start = (int(row[0]), int(row[1]))
                await conn.execute(
                    driver.dialect_insert(positions).on_conflict_do_nothing(),
                    [
                        {
                            "group_name": self._group,
                            "channel": channel,
                            "part": n,
                            "pos_tx": start[0],
                            "pos_id": start[1],
                            "owner": None,
                            "lease_until_ms": 0,
                        }
                        for n in range(self._partitions)
                    ],
                )
            renewed = 0
            if self._parts:
                result = await conn.execute(
                    positions.update()
                    .where(
                        positions.c.group_name == self._group,
                        positions.c.owner == self.member_id,
                    )
                    .values(lease_until_ms=expires)
                )
                renewed = result.rowcount
        self._initialized.update(new)
        async with driver.reading() as conn:
            if renewed != len(self._parts):
                held = {
                    (row.channel, row.part)
                    for row in await conn.execute(
                        select(positions.c.channel, positions.c.part).where(
                            positions.c.group_name == self._group,
                            positions.c.owner == self.member_id,
                        )
                    )
                }
                for key in list(self._parts):
                    if key not in held:
                        self._lose(key)
            counts = {
                row.channel: int(row.n)
                for row in await conn.execute(
                    select(members.c.channel, func.count().label("n"))
                    .where(members.c.group_name == self._group, members.c.expires_ms > now)
                    .group_by(members.c.channel)
                )
            }
        for channel in channels:
            await self._rebalance(channel, max(1, counts.get(channel, 1)), now, expires)
        if random.random() < 0.05:
            async with driver.writing() as conn:
                await conn.execute(
                    members.delete().where(
                        members.c.group_name == self._group,
                        members.c.expires_ms < now - int(opts.lease_ttl * 1000),
                    )
                )

    async def _rebalance(self, channel: str, member_count: int, now: int, expires: int) -> None:
        target = math.ceil(self._partitions / member_count)
        mine = sorted(
            (p for p in self._parts.values() if p.channel == channel and not p.releasing),
            key=lambda p: p.number,
        )
        if len(mine) > target:
            for part in mine[target:]:
                part.releasing = True
                self._purge_buffer(part)
            self._poke.set()
            return
        need = target - len(mine)
        if need <= 0:
            return
        positions = self._driver.table("hexa_positions")
        free_clause = or_(positions.c.owner.is_(None), positions.c.lease_until_ms < now)
        async with self._driver.reading() as conn:
            free = (
                (
                    await conn.execute(
                        select(positions.c.part).where(
                            positions.c.group_name == self._group,
                            positions.c.channel == channel,
                            free_clause,
                        )
                    )
                )
                .scalars()
                .all()
            )
        if not free:
            return
        wanted = random.sample(list(free), min(need, len(free)))
        async with self._driver.writing() as conn:
            claimed = (
                await conn.execute(
                    positions.update()
                    .where(
                        positions.c.group_name == self._group,
                        positions.c.channel == channel,
                        positions.c.part.in_(wanted),
                        free_clause,
                    )
                    .values(owner=self.member_id, lease_until_ms=expires)
                    .returning(positions.c.part, positions.c.pos_tx, positions.c.pos_id)
                )
            ).all()
        for row in claimed:
            part = _Part(channel, int(row.part), (int(row.pos_tx), int(row.pos_id)))
            self._parts[(channel, part.number)] = part
        if claimed:
            # Rows may wait in the new partitions, and redeliveries left by a former owner.
            self._full_poll = True
            self._redelivery_due = time.monotonic()
            self._wake.set()
            logger.debug(
                "group %s member %s claimed %d partitions of %s",
                self._group,
                self.member_id[:8],
                len(claimed),
                channel,
            )
