"""The receive side of the SQL driver: one group member's fetch, settle and close, over
:mod:`.membership` (leases), :mod:`.reader`, :mod:`.settlement` and :mod:`.partitions`
(docs/engines/sql.md, "Internals")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select

from ..._sql import clock
from ...driver import (
    Delivery,
    Outcome,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from ...errors import ConfigurationError
from ..kit.buffer import DeliveryBuffer
from .log import SqlLog
from .membership import Membership
from .partitions import Part, Pos, SqlDelivery
from .reader import blob, decode_headers, read_lag, read_partitions
from .settlement import Settlements

logger = logging.getLogger(__name__)

_CHUNK = 64  # partitions per fetch statement
_CLOSE_TIMEOUT = 15.0


class SqlSubscription(Subscription):
    """A member of one consumer group (docs/engines/sql.md, "Internals")."""

    def __init__(self, log: SqlLog, spec: SubscriptionSpec, partitions: int) -> None:
        self._log = log
        self._spec = spec
        self._group = spec.group
        self._opts = log.options
        self._partition_count = partitions
        self._membership = Membership(log, spec, partitions, self._purge_buffer)
        self.member_id, self._pattern = self._membership.member_id, self._membership.pattern
        self._parts = self._membership.parts
        self._settlements = Settlements(log, spec.group, self.member_id)
        self._buffer: DeliveryBuffer[SqlDelivery, Delivery] = DeliveryBuffer(
            self._take, refill=self._refill, idle=self._idle_time, waited=self._waited
        )
        self._handed_out = 0
        self._redelivering: dict[int, Part] = {}
        """Row id -> partition, of the redeliveries read and not settled yet."""
        self._last_flush = 0.0
        self._heartbeat_error = ""
        self._read_error = ""
        self._redelivery_due = 0.0
        self._idle_delay = self._opts.poll_interval
        self._full_poll = True
        self._discover = False
        self._poke = asyncio.Event()
        self._poll_task: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._joined: asyncio.Event | None = None
        """From :meth:`open` on; set once it is over (a close waits for it: a heartbeat
        under way would claim partitions after the close released them)."""
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

    def caught_up(self) -> bool | None:
        """True once this member holds every partition of its channels and has read each to
        the end of the log (nothing buffered, no redelivery due); None for patterns."""
        if self._pattern is not None:
            return None
        if self._buffer.closed or self._buffer:
            return False
        if self._redelivery_due and time.monotonic() >= self._redelivery_due:
            return False  # due redeliveries not read yet
        parts = [p for p in self._parts.values() if p.active]
        if len(parts) < len(set(self._spec.channels)) * self._partition_count:
            return False
        return all(p.drained and not p.blocked_until_ms for p in parts)

    async def lag(self) -> Mapping[str, int] | None:
        """Per channel, the group's rows past its stored positions (one grouped query)."""
        out = dict.fromkeys(self._spec.channels, 0)
        with self._log.failing("reading the group's lag"):
            out.update(await read_lag(self._log, self._group))
        return out

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Join the group: heartbeats until this member holds its share (the others give
        partitions up on their next heartbeat; at most ``3 * heartbeat_interval``), then
        background upkeep. Commits wake it from now on (:meth:`notify`)."""
        self._log.watchers.add(self.notify)
        interval = self._opts.heartbeat_interval
        self._joined = joined = asyncio.Event()
        try:
            await self._heartbeat()
            deadline = time.monotonic() + 3 * interval
            while not self._membership.has_its_share() and time.monotonic() < deadline:
                if self._buffer.closed:  # closed while joining: close releases what it got
                    return
                await asyncio.sleep(min(interval / 2, 0.25))
                await self._heartbeat()
            self._task = asyncio.create_task(
                self._maintain(), name=f"hexa-event:sql-member:{self._group}"
            )
        finally:
            joined.set()

    async def close(self) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close())
        # Shielded: a cancelled close still stores positions and leaves the group. Bounded:
        # with the database unreachable, the leases simply expire.
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.shield(self._close_task)
        except TimeoutError:
            what = "SQL driver: group %s: leaving took over %.0fs; going on in the background"
            logger.warning(what, self._group, _CLOSE_TIMEOUT)

    async def _close(self) -> None:
        self._buffer.close()
        self._poke.set()
        if self._joined is not None:  # closed while joining: let the join end first
            await self._joined.wait()
        # Let upkeep and a running read finish rather than cancelling them midway.
        for task in (self._task, self._poll_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        parts = list(self._parts.values())
        try:
            await self._settlements.flush(parts, release=parts)
            members = self._log.table("hexa_members")
            me = (members.c.group_name == self._group, members.c.member_id == self.member_id)
            async with self._log.writing() as conn:
                await conn.execute(members.delete().where(*me))
                if self._spec.ephemeral:
                    await self._forget_group(conn, members)
        except Exception as exc:  # the leases expire: others get what was not settled
            error = self._log.error("storing positions on close", exc)
            logger.warning(
                "SQL driver: group %s: %s; redelivered after lease_ttl", self._group, error
            )
        for part in parts:
            part.owned = False
        self._parts.clear()
        self._log.watchers.discard(self.notify)

    async def _forget_group(self, conn: Any, members: Any) -> None:
        """A throwaway group whose last member left: delete what the log kept for it."""
        alive = (members.c.group_name == self._group, members.c.expires_ms > clock.now_ms())
        if (await conn.execute(select(func.count()).where(*alive))).scalar_one():
            return
        for name in ("hexa_positions", "hexa_redeliveries", "hexa_acked", "hexa_members"):
            table = self._log.table(name)
            await conn.execute(table.delete().where(table.c.group_name == self._group))

    # -- fetch ----------------------------------------------------------------------------

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self._buffer.fetch(max_count)

    async def _refill(self) -> bool:
        """Nothing to hand out: read more when ``prefetch`` allows; True when some are buffered."""
        room = self._room()
        if room <= 0:
            return False
        task = self._poll_task
        if task is None or task.done():
            task = self._poll_task = asyncio.create_task(self._poll_safely(room, self._full_poll))
        # Shielded: a cancelled fetch leaves the read to finish into the buffer
        # (cancelling a database call midway can wedge the connection).
        await asyncio.shield(task)
        if self._buffer:
            self._idle_delay = self._opts.poll_interval
        return bool(self._buffer)

    def _room(self) -> int:
        """Deliveries the prefetch window has room for, beyond those buffered."""
        return self._spec.prefetch - self._handed_out - len(self._buffer)

    def _idle_time(self) -> float:
        """How long a fetch waits: the poll delay, or until a partition or redelivery is
        due; with a full prefetch window, the longest poll delay."""
        if self._room() <= 0:
            return self._opts.max_poll_interval
        delay = self._idle_delay
        now_ms = clock.now_ms()
        for part in self._parts.values():
            if part.blocked_until_ms > now_ms:
                delay = min(delay, (part.blocked_until_ms - now_ms) / 1000)
        if self._redelivery_due:
            delay = min(delay, self._redelivery_due - time.monotonic())
        return max(0.001, delay)

    def _waited(self, timed_out: bool) -> None:
        """Nothing woke the member: poll every partition next, less often; woken (commits
        here, NOTIFY, new partitions): poll those not drained, at the base interval."""
        self._full_poll = timed_out
        if timed_out:
            self._idle_delay = min(self._idle_delay * 2, self._opts.max_poll_interval)
        else:
            self._idle_delay = self._opts.poll_interval

    async def _poll_safely(self, room: int, full: bool) -> None:
        """Read more; a failure is kept for :meth:`status` and raised as a retriable
        :class:`DriverError` (the receiver reports it and fetches again after a pause)."""
        try:
            await self._poll(room, full)
        except Exception as exc:
            error = self._log.error("reading the log", exc)
            self._read_error = str(error)
            self._idle_delay = self._opts.max_poll_interval
            if self._redelivery_due:
                self._redelivery_due = time.monotonic() + self._idle_delay
            raise error from exc
        self._read_error = ""

    def _take(self, buffer: deque[SqlDelivery], max_count: int) -> list[Delivery]:
        limit = min(max_count, self._spec.prefetch - self._handed_out)
        out: list[Delivery] = []
        while buffer and len(out) < limit:
            delivery = buffer.popleft()
            if delivery.part.active:
                out.append(delivery)
        self._handed_out += len(out)
        return out

    async def _poll(self, room: int, full: bool) -> None:
        now_ms = clock.now_ms()
        if self._redelivery_due and time.monotonic() >= self._redelivery_due:
            await self._poll_redeliveries(room, now_ms)
            room -= len(self._buffer)
        if room <= 0:
            return
        parts = [
            p
            for p in self._parts.values()
            if not p.releasing
            and p.blocked_until_ms <= now_ms
            and (full or not p.drained or p.blocked_until_ms)
        ]
        if not parts:
            return
        self._full_poll = False
        per = max(16, math.ceil(room / len(parts)))
        for start in range(0, len(parts), _CHUNK):
            await self._poll_log(parts[start : start + _CHUNK], per, now_ms)

    async def _poll_log(self, parts: list[Part], per: int, now_ms: int) -> None:
        cursors = [p.cursor for p in parts]
        for part in parts:
            part.woken = False
        by_part = await read_partitions(self._log, parts, per)
        buffer = self._buffer.items
        for part, cursor in zip(parts, cursors, strict=True):
            if not part.active or part.cursor != cursor:
                continue
            part_rows = by_part.get((part.channel, part.number), [])
            part.drained = len(part_rows) < per and not part.woken
            part.blocked_until_ms = 0
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
                if part.skip and pos in part.skip:
                    part.skip.discard(pos)
                    part.settle(pos)  # acked by a former owner before it let go
                    continue
                record = RawRecord(channel, key, decode_headers(headers), blob(body))
                buffer.append(SqlDelivery(self, part, pos, record, 1, created_ms / 1000))

    async def _poll_redeliveries(self, room: int, now_ms: int) -> None:
        rows = await self._settlements.due(now_ms, room + len(self._redelivering))
        if rows is None:  # read while settlements changed them: read again
            self._redelivery_due = time.monotonic()
            return
        self._redelivery_due = time.monotonic() + (
            0.0 if len(rows) >= room else self._opts.heartbeat_interval
        )
        for row in rows:
            part = self._parts.get((row.channel, row.part))
            taken = row.log_id in self._redelivering or self._settlements.unwritten(row.log_id)
            if part is None or not part.active or taken:
                continue
            self._redelivering[row.log_id] = part
            record = RawRecord(
                row.channel, row.msg_key, decode_headers(row.headers), blob(row.body)
            )
            pos, created = (row.txid, row.log_id), row.created_ms / 1000
            self._buffer.items.append(
                SqlDelivery(self, part, pos, record, row.attempts, created, redelivered=True)
            )

    # -- settling -------------------------------------------------------------------------

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Apply the outcomes (each settled delivery leaves the prefetch window), then write
        every pending settlement in one transaction (:mod:`.settlement`). On failure it all
        stays pending for the next call or close; a delivery is never applied twice."""
        closed = self._buffer.closed
        for delivery in deliveries:
            if not isinstance(delivery, SqlDelivery) or delivery.sub is not self:
                raise ConfigurationError("settle() got a delivery of another subscription")
            if delivery.applied or delivery.outcome is None:
                continue
            delivery.applied = True
            if closed:
                continue
            self._handed_out -= 1
            if delivery.outcome is Outcome.ACK and not delivery.redelivered:
                delivery.part.settle(delivery.pos)  # the common case, as _apply would
            else:
                self._apply(delivery)
        if closed:
            return
        self._buffer.wake()  # room in the prefetch window
        # At most one write per ack_interval: the core's batches arriving meanwhile join it.
        wait = self._last_flush + self._opts.ack_interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_flush = time.monotonic()
        await self._settlements.flush(self._parts.values())
        if any(p.releasing for p in self._parts.values()):
            self._poke.set()

    def _apply(self, delivery: SqlDelivery) -> None:
        part, log_id = delivery.part, delivery.pos[1]
        if delivery.outcome is Outcome.NACK:
            delay = delivery.delay
            if delay <= 0 and part.active:
                # Hand it out again from memory; its position stays unsettled meanwhile.
                self._buffer.appendleft(delivery.again())
                return
            if part.owned:
                due = clock.now_ms() + int(delay * 1000)
                count = delivery.delivery_count + 1
                self._settlements.redeliver(log_id, part, due, count)
            asyncio.get_running_loop().call_later(max(0.0, delay), self._redelivery_now)
        elif delivery.redelivered:
            self._settlements.redelivered(log_id)
        if delivery.redelivered:
            self._redelivering.pop(log_id, None)
        else:
            part.settle(delivery.pos)

    def _redelivery_now(self) -> None:
        self._redelivery_due = time.monotonic()
        self._buffer.wake()

    # -- notifications from the driver ------------------------------------------------------

    def notify(self, channels: set[str] | None) -> None:
        """Rows were committed to ``channels`` (None: unknown channels)."""
        if self._buffer.closed:
            return
        hit = self._membership.channels
        if channels is not None:
            hit = channels & hit
            pattern = self._pattern
            if pattern is not None and any(pattern.fullmatch(c) for c in channels - hit):
                self._discover = True
                self._poke.set()
            if not hit:
                return
        for part in self._parts.values():
            if channels is None or part.channel in hit:
                part.drained, part.woken = False, True
        self._buffer.wake()

    # -- upkeep: heartbeats, rebalancing, releasing ------------------------------------------

    async def _maintain(self) -> None:
        """Heartbeats every ``heartbeat_interval`` (at once when :meth:`notify` saw a channel
        the pattern may match), and partitions released once idle (poked by ``settle``)."""
        interval = self._opts.heartbeat_interval
        next_beat = time.monotonic() + interval
        while not self._buffer.closed:
            if time.monotonic() >= next_beat or self._discover:
                self._discover = False
                self._heartbeat_error = await self._upkeep("heartbeat", self._heartbeat)
                next_beat = time.monotonic() + interval
            await self._upkeep("releasing partitions", self._release_idle)
            timeout = max(0.0, next_beat - time.monotonic())
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._poke.wait()

    async def _upkeep(self, what: str, step: Callable[[], Awaitable[None]]) -> str:
        """Run ``step``; a failure is logged (at most every 5 s) and returned as text."""
        try:
            await step()
        except Exception as exc:
            error = str(self._log.error(what, exc))
            now = time.monotonic()
            if now - self._last_warning >= 5.0:
                self._last_warning = now
                logger.warning("SQL driver: group %s: %s; retrying", self._group, error)
            return error
        return ""

    async def _release_idle(self) -> None:
        busy = set(self._redelivering.values())
        idle = [p for p in self._parts.values() if p.releasing and not (p.outstanding or p in busy)]
        if not idle:
            return
        await self._settlements.flush(self._parts.values(), release=idle)
        for part in idle:
            part.owned = False
            self._parts.pop((part.channel, part.number), None)
        logger.debug("group %s: released %d partitions", self._group, len(idle))

    async def _heartbeat(self) -> None:
        if await self._membership.heartbeat():  # new partitions (not drained), and maybe
            self._redelivery_now()  # redeliveries their former owner left

    def _purge_buffer(self, part: Part) -> None:
        """Drop ``part``'s deliveries that were read but never handed out."""
        for delivery in self._buffer.items:
            if delivery.part is part and delivery.redelivered:
                self._redelivering.pop(delivery.pos[1], None)
            elif delivery.part is part:
                part.outstanding.pop(delivery.pos, None)
        self._buffer.keep(lambda delivery: delivery.part is not part)
