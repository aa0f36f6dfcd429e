"""Group membership: leases on virtual partitions (``hexa_positions.owner``), heartbeats
and rebalancing to ``ceil(partitions / members)`` per member and channel (docs/engines/sql.md,
"Internals")."""

from __future__ import annotations

import logging
import math
import random
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, or_, select

from ..._sql.clock import now_ms
from ...driver import SubscriptionSpec
from ..kit.driver import channel_pattern
from .log import SqlLog
from .partitions import Part

logger = logging.getLogger(__name__)


class Membership:
    """One member's leases; ``parts`` maps (channel, number) to the partitions it holds.
    ``drop(part)``: stop handing out ``part`` (its lease expired, or it was marked
    ``releasing``), called before anything else runs."""

    def __init__(
        self, log: SqlLog, spec: SubscriptionSpec, partitions: int, drop: Callable[[Part], None]
    ) -> None:
        self._log = log
        self._opts = log.options
        self._spec = spec
        self.group = spec.group
        self.member_id = uuid.uuid4().hex
        self._partitions = partitions
        self.pattern = channel_pattern(spec)
        self._explicit = tuple(dict.fromkeys(spec.channels))
        self.channels: set[str] = set(self._explicit)
        """The channels this member consumes (explicit ones and pattern matches)."""
        self._initialized: set[str] = set()
        self.parts: dict[tuple[str, int], Part] = {}
        self._shares: dict[str, tuple[int, int]] = {}
        """Per channel: (target, live members) of the last rebalance."""
        self._drop = drop

    async def heartbeat(self) -> bool:
        """Renew leases, register per channel, discover channels, rebalance; True when it
        claimed partitions (rows may wait in them, and a former owner's redeliveries)."""
        driver = self._log
        positions = driver.table("hexa_positions")
        members = driver.table("hexa_members")
        log = driver.table("hexa_log")
        now = now_ms()
        ttl_ms = int(self._opts.lease_ttl * 1000)
        expires = now + ttl_ms
        if self.pattern is not None:
            names_q = select(driver.table("hexa_channels").c.channel)
            async with driver.connection() as conn:
                names = (await conn.execute(names_q)).scalars().all()
            matched = {name for name in names if self.pattern.fullmatch(name)}
            self.channels = set(self._explicit) | matched
        channels = sorted(self.channels)
        new = [c for c in channels if c not in self._initialized]
        mine = (positions.c.group_name == self.group, positions.c.owner == self.member_id)
        async with driver.writing() as conn:
            if channels:
                me = {"group_name": self.group, "member_id": self.member_id, "expires_ms": expires}
                keys = ("group_name", "channel", "member_id")
                upsert = driver.upsert(members, keys, update=("expires_ms",))
                await conn.execute(upsert, [{**me, "channel": c} for c in channels])
            for channel in new:  # unowned, at the start or after the last row
                start: Any = (0, 0)
                if self._spec.start == "latest":
                    last = select(func.max(log.c.txid), func.max(log.c.id))
                    start = (await conn.execute(last.where(log.c.channel == channel))).one()
                fresh: dict[str, Any] = {"group_name": self.group, "channel": channel}
                fresh.update(pos_tx=int(start[0] or 0), pos_id=int(start[1] or 0))
                rows = [{**fresh, "part": n} for n in range(self._partitions)]
                await conn.execute(driver.upsert(positions), rows)
            renewed = 0
            if self.parts:
                renew = positions.update().where(*mine).values(lease_until_ms=expires)
                renewed = (await conn.execute(renew)).rowcount
        self._initialized.update(new)
        async with driver.connection() as conn:
            if renewed != len(self.parts):
                held_q = select(positions.c.channel, positions.c.part).where(*mine)
                held = {(row.channel, row.part) for row in await conn.execute(held_q)}
                for key in [key for key in self.parts if key not in held]:
                    part = self.parts.pop(key)  # its lease expired: another member has it
                    self._drop(part)
                    part.owned = False
                    logger.info("SQL driver: group %s lost %s-%d (lease expired)", self.group, *key)
            counts_q = (
                select(members.c.channel, func.count().label("n"))
                .where(members.c.group_name == self.group, members.c.expires_ms > now)
                .group_by(members.c.channel)
            )
            counts = {row.channel: int(row.n) for row in await conn.execute(counts_q)}
        claimed = False
        for channel in channels:
            count = max(1, counts.get(channel, 1))
            claimed = await self._rebalance(channel, count, now, expires) or claimed
        if random.random() < 0.05:
            gone = (members.c.group_name == self.group, members.c.expires_ms < now - ttl_ms)
            async with driver.writing() as conn:
                await conn.execute(members.delete().where(*gone))
        return claimed

    def has_its_share(self) -> bool:
        """Whether this member holds, in every channel, at least the share no other member
        can take from it (as of the last heartbeat): the others fill their targets first."""
        for channel, (target, members) in self._shares.items():
            least = min(target, max(0, self._partitions - (members - 1) * target))
            held = sum(1 for p in self.parts.values() if p.channel == channel and not p.releasing)
            if held < least:
                return False
        return True

    async def _rebalance(self, channel: str, member_count: int, now: int, expires: int) -> bool:
        target = math.ceil(self._partitions / member_count)
        self._shares[channel] = (target, member_count)
        mine = sorted(
            (p for p in self.parts.values() if p.channel == channel and not p.releasing),
            key=lambda p: p.number,
        )
        for part in mine[target:]:  # beyond the target: given up once idle
            part.releasing = True
            self._drop(part)
        need = target - len(mine)
        if need <= 0:
            return False
        positions = self._log.table("hexa_positions")
        ours = (positions.c.group_name == self.group, positions.c.channel == channel)
        free_clause = or_(positions.c.owner.is_(None), positions.c.lease_until_ms < now)
        async with self._log.connection() as conn:
            free_q = select(positions.c.part).where(*ours, free_clause)
            free = (await conn.execute(free_q)).scalars().all()
        if not free:
            return False
        wanted = random.sample(list(free), min(need, len(free)))
        claim = (
            positions.update()
            .where(*ours, positions.c.part.in_(wanted), free_clause)
            .values(owner=self.member_id, lease_until_ms=expires)
            .returning(positions.c.part, positions.c.pos_tx, positions.c.pos_id)
        )
        a = self._log.table("hexa_acked")  # rows the group acked above the stored positions
        async with self._log.writing() as conn:
            claimed = {int(row.part): row for row in await conn.execute(claim)}
            ours = (a.c.group_name == self.group, a.c.channel == channel)
            acked = select(a.c.part, a.c.txid, a.c.log_id).where(*ours, a.c.part.in_(claimed))
            skips = (await conn.execute(acked)).all() if claimed else []
        for number, row in claimed.items():
            pos = (int(row.pos_tx), int(row.pos_id))
            part = self.parts[(channel, number)] = Part(channel, number, pos, pos)
            part.skip = {(int(t), int(i)) for n, t, i in skips if n == number and (t, i) > pos}
        logger.debug("group %s claimed %d partitions of %s", self.group, len(claimed), channel)
        return bool(claimed)
