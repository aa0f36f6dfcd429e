"""The memory driver's receive side: group members and their deliveries."""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import cast

from ...driver import Delivery, Outcome, Subscription, SubscriptionSpec, SubscriptionStatus
from ..kit.buffer import DeliveryBuffer
from .broker import Member, MemoryBroker, PartitionId, StoredRecord


class MemoryDelivery(Delivery):
    """A record of one partition; its position is (pid, offset)."""

    __slots__ = ("offset", "pid")

    native = None  # no client message (a class attribute: no property call per event)

    def __init__(self, stored: StoredRecord, pid: PartitionId, offset: int, count: int) -> None:
        # Hot path: the base class's slots set directly, but ``coordinates``, made when
        # read (see below). Groups share the stored record; the core hands handlers its
        # headers read-only.
        self.record = stored.record
        self.delivery_count = count
        self.timestamp = stored.timestamp
        self.outcome = None
        self.delay = 0.0
        self.pid = pid
        self.offset = offset

    @property
    def coordinates(self) -> str:  # type: ignore[override]
        """``<channel>-<partition>-<offset>``, made when read: a delivery with an event id
        of ours is never asked (the id of last resort)."""
        pid = self.pid
        return f"{pid[0]}-{pid[1]}-{self.offset}"


class MemorySubscription(Subscription):
    """One member of a consumer group on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, spec: SubscriptionSpec) -> None:
        self.broker = broker
        self.spec = spec
        self._buffer: DeliveryBuffer[object, MemoryDelivery] = DeliveryBuffer(
            self._take, idle=self._until_redelivery
        )
        """Holds nothing: ``_take`` reads the broker's log; fetch waits on it."""
        self.member = Member(spec, self._buffer.wake)
        """What the broker knows of this member (the partitions it was given)."""
        self._redeliveries: list[tuple[float, PartitionId, int]] = []
        """A heap of (due, partition, offset): ties go in offset order."""
        self._rotation = 0

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Apply acks to the group's partitions; queue nacks for redelivery after their delay."""
        if (group := self.broker.groups.get(self.spec.group)) is None:
            return
        partitions = group.partitions
        last: PartitionId | None = None
        state = None
        ack = Outcome.ACK
        for delivery in cast(Sequence[MemoryDelivery], deliveries):  # ours, from fetch
            pid, offset = delivery.pid, delivery.offset
            if pid is not last:  # a fetch hands out runs of one partition
                last, state = pid, partitions.get(pid)
            if state is None:
                continue
            if delivery.outcome is ack:
                state.ack(offset)
            elif state.owner is self.member and not self._buffer.closed:
                due = time.monotonic() + delivery.delay
                heapq.heappush(self._redeliveries, (due, pid, offset))
                self._buffer.wake()
            # Otherwise the partition's next owner starts at the committed offset, which is at
            # or below this unacked one, so the record is delivered again there.

    def status(self) -> SubscriptionStatus:
        return SubscriptionStatus(
            assignment=tuple(f"{channel}-{number}" for channel, number in self.member.assigned),
            error="" if not self._buffer.closed else "closed",
        )

    async def lag(self) -> Mapping[str, int] | None:
        """Per channel, the group's records at or past its committed offset, not acked."""
        if (group := self.broker.groups.get(self.spec.group)) is None:
            return None
        out = dict.fromkeys(self.spec.channels, 0)
        logs = self.broker.logs
        for (channel, number), state in group.partitions.items():
            if channel in out or self.member.matches(channel):
                behind = len(logs[channel][number]) - state.committed - len(state.acked)
                out[channel] = out.get(channel, 0) + max(0, behind)
        return out

    def _take(self, _items: deque[object], max_count: int) -> list[MemoryDelivery]:
        group = self.broker.groups[self.spec.group]
        out: list[MemoryDelivery] = []
        now = time.monotonic()
        while self._redeliveries and self._redeliveries[0][0] <= now and len(out) < max_count:
            _, pid, offset = heapq.heappop(self._redeliveries)
            state = group.partitions.get(pid)
            if state is None or state.owner is not self.member:
                continue
            if offset < state.committed or offset in state.acked:
                continue
            stored = self.broker.logs[pid[0]][pid[1]][offset]
            out.append(MemoryDelivery(stored, pid, offset, state.delivered_again(offset)))
        assigned = self.member.assigned
        held = len(assigned)
        self._rotation = (self._rotation + 1) % max(1, held)
        for i in range(held):
            if len(out) >= max_count:
                break
            pid = assigned[(self._rotation + i) % held]
            state = group.partitions[pid]
            log = self.broker.logs[pid[0]][pid[1]]
            position = state.position
            acked, committed = state.acked, state.committed
            while position < len(log) and len(out) < max_count:
                if position >= committed and (not acked or position not in acked):
                    if position >= state.fresh:
                        # The common case: from here on nothing was delivered to the group
                        # (so nothing is acked either): each is delivered for the first time.
                        end = min(len(log), position + max_count - len(out))
                        state.fresh = end
                        out.extend(
                            [MemoryDelivery(log[n], pid, n, 1) for n in range(position, end)]
                        )
                        position = end
                        continue
                    delivered = state.delivered_again(position)
                    out.append(MemoryDelivery(log[position], pid, position, delivered))
                position += 1
            state.position = position
        return out

    def _until_redelivery(self) -> float | None:
        if not self._redeliveries:
            return None
        return max(0.0, self._redeliveries[0][0] - time.monotonic())

    async def fetch(self, max_count: int) -> Sequence[MemoryDelivery]:
        return await self._buffer.fetch(max_count)

    async def close(self) -> None:
        if self._buffer.closed:
            return
        self._buffer.close()
        self._redeliveries.clear()
        self.broker.leave(self.member)
