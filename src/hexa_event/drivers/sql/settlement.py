"""Writing a member's settlements (positions, delayed redeliveries, acked redeliveries), all
pending ones in one transaction: a stored position never passes a nacked record whose
redelivery row is not written with it. Writing a settlement twice is harmless."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, select

from .log import SqlLog
from .partitions import Part, Pos


async def finish_before_cancelling(task: asyncio.Future[None]) -> None:
    """Await ``task`` to its end; a cancellation meanwhile is raised only after it (a write
    cut short can leave SQLite's write lock held by a connection SQLAlchemy then drops,
    wedging every later writer of the file for the busy timeout)."""
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


class Settlements:
    """The settlements of one group member not yet written, and how to write them."""

    def __init__(self, log: SqlLog, group: str, member_id: str) -> None:
        self._log = log
        self._group = group
        self._member_id = member_id
        self._redeliveries: dict[int, dict[str, Any] | None] = {}
        """Row id -> its ``hexa_redeliveries`` row to write, or None: delete it (acked)."""
        self._lock = asyncio.Lock()
        self._flushes = 0
        self._store = {release: self._positions_update(release) for release in (False, True)}
        """The position updates (keeping, releasing the lease), built once: building and
        keying a statement cost more than writing a few positions."""

    async def due(self, now_ms: int, limit: int) -> Sequence[Any] | None:
        """Up to ``limit`` redeliveries of the group due by ``now_ms`` in partitions this
        member holds; None when a flush was written meanwhile (it may have changed the rows
        read: read again)."""
        log, flushes = self._log, self._flushes
        r, p, rows = (log.table(n) for n in ("hexa_redeliveries", "hexa_positions", "hexa_log"))
        held = and_(
            p.c.group_name == r.c.group_name, p.c.channel == r.c.channel, p.c.part == r.c.part
        )
        columns = [rows.c[n] for n in ("txid", "channel", "part", "msg_key", "headers", "body")]
        query = (
            select(r.c.log_id, r.c.attempts, *columns, rows.c.created_ms)
            .select_from(r.join(p, held).join(rows, rows.c.id == r.c.log_id))
            .where(r.c.group_name == self._group, p.c.owner == self._member_id)
            .where(r.c.visible_ms <= now_ms)
            .order_by(r.c.visible_ms)
            .limit(limit)
        )
        async with log.connection() as conn:
            due = (await conn.execute(query)).all()
        return due if self._flushes == flushes else None

    def unwritten(self, log_id: int) -> bool:
        """Row ``log_id``'s redelivery was acked or re-scheduled and that is not written yet:
        what ``hexa_redeliveries`` holds for it is stale."""
        return log_id in self._redeliveries

    def redeliver(self, log_id: int, part: Part, visible_ms: int, attempts: int) -> None:
        """Give row ``log_id`` of ``part`` back to the group, due at ``visible_ms``."""
        row = {"group_name": self._group, "log_id": log_id, "channel": part.channel}
        row.update(part=part.number, visible_ms=visible_ms, attempts=attempts)
        self._redeliveries[log_id] = row

    def redelivered(self, log_id: int) -> None:
        """Row ``log_id``'s redelivery was acked: its ``hexa_redeliveries`` row goes."""
        self._redeliveries[log_id] = None

    async def flush(self, parts: Iterable[Part], release: Sequence[Part] = ()) -> None:
        """Write pending settlements of ``parts`` (and release ``release``) in one transaction.

        Raises :class:`~hexa_event.errors.DriverError`; what was not written stays pending.
        """
        async with self._lock:
            gone = set(release)
            kept = [(p, p.committed) for p in parts if p.dirty and p not in gone]
            released = [(p, p.committed) for p in release]
            redeliveries = dict(self._redeliveries)
            if kept or released or redeliveries:
                write = self._write(kept, released, redeliveries)
                await finish_before_cancelling(asyncio.ensure_future(write))

    async def _write(
        self,
        kept: list[tuple[Part, Pos]],
        released: list[tuple[Part, Pos]],
        redeliveries: dict[int, dict[str, Any] | None],
    ) -> None:
        r = self._log.table("hexa_redeliveries")
        due = [row for row in redeliveries.values() if row is not None]
        acked = sorted(log_id for log_id, row in redeliveries.items() if row is None)
        with self._log.failing("storing settlements"):
            async with self._log.writing() as conn:
                if due:
                    stmt = self._log.upsert(r, ("group_name", "log_id"), ("visible_ms", "attempts"))
                    await conn.execute(stmt, due)
                if acked:
                    in_acked = r.c.log_id.in_(acked)
                    await conn.execute(r.delete().where(r.c.group_name == self._group, in_acked))
                await self._store_positions(conn, kept, release=False)
                await self._store_positions(conn, released, release=True)
                await self._store_acked(conn, [part for part, _ in released])
        for part, pos in (*kept, *released):
            if part.committed == pos:
                part.dirty = False
        for log_id, row in redeliveries.items():
            if self._redeliveries.get(log_id, False) is row:
                del self._redeliveries[log_id]
        self._flushes += 1

    async def _store_acked(self, conn: Any, parts: Sequence[Part]) -> None:
        """For partitions let go of: replace their ``hexa_acked`` rows with the rows acked
        above their position, so the next owner skips them."""
        acked = self._log.table("hexa_acked")
        rows = []
        for part in parts:
            of_part = (acked.c.channel == part.channel, acked.c.part == part.number)
            await conn.execute(acked.delete().where(acked.c.group_name == self._group, *of_part))
            where = {"group_name": self._group, "channel": part.channel, "part": part.number}
            rows += [{**where, "log_id": pos[1], "txid": pos[0]} for pos in part.acked_above()]
        if rows:
            await conn.execute(acked.insert(), rows)

    def _positions_update(self, release: bool) -> Any:
        """Positions given as ``b_*`` parameters, fenced by ownership; releasing the leases
        if asked."""
        positions = self._log.table("hexa_positions")
        lease: dict[str, Any] = {"owner": None, "lease_until_ms": 0} if release else {}
        return (
            positions.update()
            .where(positions.c.group_name == self._group, positions.c.owner == self._member_id)
            .where(positions.c.channel == bindparam("b_channel"))
            .where(positions.c.part == bindparam("b_part"))
            .values(pos_tx=bindparam("b_tx"), pos_id=bindparam("b_id"), **lease)
        )

    async def _store_positions(
        self, conn: Any, parts: Sequence[tuple[Part, Pos]], *, release: bool
    ) -> None:
        """Write the given positions (fenced by ownership); release the leases if asked."""
        if not parts:
            return
        rows = [
            {"b_channel": p.channel, "b_part": p.number, "b_tx": pos[0], "b_id": pos[1]}
            for p, pos in parts
        ]
        await conn.execute(self._store[release], rows)
