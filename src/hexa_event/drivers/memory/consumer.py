"""The memory driver's receive side: group members and their deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Sequence

from ...driver import Delivery, StartPosition, Subscription, SubscriptionSpec
from .broker import MemoryBroker, PartitionId, compile_pattern


class MemoryDelivery(Delivery):
    __slots__ = ("_member", "_offset", "_pid", "_settled")

    def __init__(
        self, member: MemorySubscription, pid: PartitionId, offset: int, count: int
    ) -> None:
        stored = member.broker.logs[pid[0]][pid[1]][offset]
        super().__init__(
            stored.record,
            coordinates=f"{pid[0]}-{pid[1]}-{offset}",
            delivery_count=count,
            timestamp=stored.timestamp,
        )
        self._member = member
        self._pid = pid
        self._offset = offset
        self._settled = False

    async def ack(self) -> None:
        if self._settled:
            return
        self._settled = True
        self._member.settle(self._pid, self._offset, ack=True)

    async def nack(self, delay: float = 0.0) -> None:
        if self._settled:
            return
        self._settled = True
        self._member.settle(self._pid, self._offset, ack=False, delay=delay)


class MemorySubscription(Subscription):
    """One member of a consumer group on a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, spec: SubscriptionSpec) -> None:
        self.broker = broker
        self.group_name = spec.group
        self.spec_channels = spec.channels
        self._channels = frozenset(spec.channels)
        self._pattern = compile_pattern(spec.pattern)
        self.start: StartPosition = spec.start
        self.assigned: list[PartitionId] = []
        self.positions: dict[PartitionId, int] = {}
        self.wake = asyncio.Event()
        self._redeliveries: list[tuple[float, int, PartitionId, int]] = []
        self._rotation = 0
        self._closed = False

    def matches(self, channel: str) -> bool:
        if channel in self._channels:
            return True
        return self._pattern is not None and self._pattern.fullmatch(channel) is not None

    def settle(self, pid: PartitionId, offset: int, *, ack: bool, delay: float = 0.0) -> None:
        state = self.broker.groups[self.group_name].partitions.get(pid)
        if state is None:
            return
        if ack:
            state.ack(offset)
            return
        if state.owner is self and not self._closed:
            seq = self.broker.next_redelivery_seq()
            heapq.heappush(self._redeliveries, (time.monotonic() + delay, seq, pid, offset))
            self.wake.set()
        # Otherwise the partition's next owner starts at the committed offset, which is at or
        # below this unacked one, so the record is delivered again there.

    def _take(self, max_count: int) -> list[MemoryDelivery]:
        group = self.broker.groups[self.group_name]
        out: list[MemoryDelivery] = []
        now = time.monotonic()
        while self._redeliveries and self._redeliveries[0][0] <= now and len(out) < max_count:
            _, _, pid, offset = heapq.heappop(self._redeliveries)
            state = group.partitions.get(pid)
            if state is None or state.owner is not self or offset < state.committed:
                continue
            if offset in state.acked:
                continue
            out.append(self._deliver(pid, offset))
        if not self.assigned:
            return out
        count = len(self.assigned)
        self._rotation = (self._rotation + 1) % count
        for i in range(count):
            if len(out) >= max_count:
                break
            pid = self.assigned[(self._rotation + i) % count]
            state = group.partitions[pid]
            log = self.broker.logs[pid[0]][pid[1]]
            position = self.positions.get(pid, state.committed)
            while position < len(log) and len(out) < max_count:
                if position not in state.acked and position >= state.committed:
                    out.append(self._deliver(pid, position))
                position += 1
            self.positions[pid] = position
        return out

    def _deliver(self, pid: PartitionId, offset: int) -> MemoryDelivery:
        state = self.broker.groups[self.group_name].partitions[pid]
        count = state.delivery_counts.get(offset, 0) + 1
        state.delivery_counts[offset] = count
        return MemoryDelivery(self, pid, offset, count)

    async def fetch(self, max_count: int) -> Sequence[MemoryDelivery]:
        while not self._closed:
            self.wake.clear()
            taken = self._take(max_count)
            if taken:
                return taken
            timeout = None
            if self._redeliveries:
                timeout = max(0.0, self._redeliveries[0][0] - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
        return []

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._redeliveries.clear()
        self.broker.leave(self)
        self.wake.set()
