"""A process-local, partitioned log with consumer groups, modelled on Kafka: per group and
partition a committed offset plus the offsets acked above it; a partition's next owner
starts at the committed offset (docs/engines/memory.md)."""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from ...driver import RawRecord, SubscriptionSpec
from ..kit.driver import channel_pattern

PartitionId = tuple[str, int]

_KEYS_KEPT = 10_000
"""Keys whose partition the broker remembers (forgotten all at once past that)."""


@dataclass(slots=True, eq=False)
class Member:
    """A group member as the broker sees it: what it subscribed to, the partitions it was given
    and how to wake its fetch."""

    spec: SubscriptionSpec
    wake: Callable[[], None]
    assigned: list[PartitionId] = field(default_factory=list)
    pattern: re.Pattern[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.pattern = channel_pattern(self.spec)

    def matches(self, channel: str) -> bool:
        if channel in self.spec.channels:
            return True
        return self.pattern is not None and self.pattern.fullmatch(channel) is not None


class StoredRecord(msgspec.Struct, gc=False):
    """A record in the log and when it was appended (untracked by the garbage collector,
    which would otherwise scan the whole log at each full collection)."""

    record: RawRecord
    timestamp: float


@dataclass(slots=True)
class PartitionState:
    """One group's progress through one partition; ``position``: the next offset its owner
    reads (the committed one when it got the partition).

    Delivery counts: every offset from ``fresh`` on was never delivered to the group (its
    count is 1 when it is); ``redelivered`` holds the counts of the offsets below it that
    were delivered more than once and are not committed yet, so a first delivery, the
    common case, writes no count at all."""

    committed: int
    position: int = 0
    acked: set[int] = field(default_factory=set)
    fresh: int = 0
    redelivered: dict[int, int] = field(default_factory=dict)
    owner: Member | None = None

    def delivered_again(self, offset: int) -> int:
        """Count one more delivery of ``offset`` (below ``fresh``: delivered before); return
        the count."""
        count = self.redelivered[offset] = self.redelivered.get(offset, 1) + 1
        return count

    def ack(self, offset: int) -> None:
        if offset == self.committed and not self.acked:  # in order: move the mark at once
            self.committed = offset + 1
            if self.redelivered:
                self.redelivered.pop(offset, None)
            return
        if offset < self.committed:
            return
        self.acked.add(offset)
        while self.committed in self.acked:
            self.acked.discard(self.committed)
            self.redelivered.pop(self.committed, None)
            self.committed += 1


@dataclass(slots=True)
class Group:
    members: list[Member] = field(default_factory=list)
    partitions: dict[PartitionId, PartitionState] = field(default_factory=dict)


class MemoryBroker:
    """The shared state behind every :class:`MemoryDriver` connected to one name."""

    _registry: dict[str, MemoryBroker] = {}

    def __init__(self, partitions: int = 4) -> None:
        self.partition_count = partitions
        self.logs: dict[str, list[list[StoredRecord]]] = {}
        self.groups: dict[str, Group] = {}
        self._partitions: dict[str, int] = {}
        """The partitions of recent keys (see :meth:`partition`)."""

    @classmethod
    def named(cls, name: str, partitions: int = 4) -> MemoryBroker:
        """The broker registered under ``name`` in this process (created on first use)."""
        return cls._registry.setdefault(name, cls(partitions))

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop a named broker and everything it holds."""
        cls._registry.pop(name, None)

    def ensure_channel(self, channel: str) -> list[list[StoredRecord]]:
        log = self.logs.get(channel)
        if log is None:
            log = self.logs[channel] = [[] for _ in range(self.partition_count)]
            for group in self.groups.values():
                if any(member.matches(channel) for member in group.members):
                    self.rebalance(group)
        return log

    def append(self, records: list[RawRecord]) -> None:
        now = time.time()
        touched: set[str] = set()
        partition_of = self._partitions.get
        channel = None
        log: list[list[StoredRecord]] = []
        for record in records:
            if record.channel != channel:  # a batch is mostly one channel's
                channel = record.channel
                log = self.ensure_channel(channel)
                touched.add(channel)
            if (number := partition_of(record.key)) is None:
                number = self.partition(record.key)
            log[number].append(StoredRecord(record, now))
        for group in self.groups.values():
            for member in group.members:
                if any(member.matches(channel) for channel in touched):
                    member.wake()

    def partition(self, key: str) -> int:
        """The partition of ``key`` (a hash of it), remembered for the next records."""
        number = zlib.crc32(key.encode()) % self.partition_count
        if len(self._partitions) >= _KEYS_KEPT:
            self._partitions.clear()
        self._partitions[key] = number
        return number

    def join(self, member: Member) -> None:
        group = self.groups.setdefault(member.spec.group, Group())
        group.members.append(member)
        for channel in member.spec.channels:
            self.ensure_channel(channel)
        self.rebalance(group)

    def leave(self, member: Member) -> None:
        group = self.groups[member.spec.group]
        group.members.remove(member)
        if not group.members and member.spec.ephemeral:
            del self.groups[member.spec.group]  # a throwaway group leaves nothing behind
            return
        self.rebalance(group)

    def rebalance(self, group: Group) -> None:
        """Spread the group's partitions over its members, round robin, deterministically."""
        for member in group.members:
            member.assigned.clear()
        index = 0
        for channel in sorted(self.logs):
            eligible = [m for m in group.members if m.matches(channel)]
            if not eligible:
                continue
            for number in range(self.partition_count):
                pid = (channel, number)
                owner = eligible[index % len(eligible)]
                index += 1
                state = group.partitions.get(pid)
                if state is None:
                    latest = owner.spec.start == "latest"
                    start = len(self.logs[channel][number]) if latest else 0
                    state = group.partitions[pid] = PartitionState(committed=start)
                if state.owner is not owner:
                    state.owner = owner
                    state.position = state.committed
                owner.assigned.append(pid)
        for state in group.partitions.values():
            if state.owner is not None and state.owner not in group.members:
                state.owner = None
        for member in group.members:
            member.wake()
