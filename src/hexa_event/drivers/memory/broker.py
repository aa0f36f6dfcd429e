"""A process-local, partitioned log with consumer groups, modelled on Kafka.

Each channel is split into partitions by a hash of the key; each group has, per partition,
a committed offset (everything below it is acked) plus the set of offsets acked above it;
a group's partitions are shared among its members. Members that leave give their
unsettled records back; the partition's next owner starts at the committed offset.
"""

from __future__ import annotations

import itertools
import time
import zlib
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from ...driver import RawRecord, StartPosition

PartitionId = tuple[str, int]


class Member(Protocol):
    """What the broker needs of a group member (the subscription implements it)."""

    group_name: str
    ephemeral: bool
    spec_channels: tuple[str, ...]
    start: StartPosition
    assigned: list[PartitionId]
    positions: dict[PartitionId, int]

    def wake(self) -> None:
        """Records arrived or the assignment changed: a waiting fetch looks again."""

    def matches(self, channel: str) -> bool: ...


class StoredRecord(msgspec.Struct, gc=False):
    """A record in the log and when it was appended (untracked by the garbage collector,
    which would otherwise scan the whole log at each full collection)."""

    record: RawRecord
    timestamp: float


@dataclass(slots=True)
class PartitionState:
    """One group's progress through one partition."""

    committed: int
    acked: set[int] = field(default_factory=set)
    delivery_counts: dict[int, int] = field(default_factory=dict)
    owner: Member | None = None

    def ack(self, offset: int) -> None:
        if offset == self.committed and not self.acked:  # in order: move the mark at once
            self.delivery_counts.pop(offset, None)
            self.committed = offset + 1
            return
        if offset < self.committed:
            return
        self.acked.add(offset)
        while self.committed in self.acked:
            self.acked.discard(self.committed)
            self.delivery_counts.pop(self.committed, None)
            self.committed += 1


@dataclass(slots=True)
class Group:
    name: str
    members: list[Member] = field(default_factory=list)
    partitions: dict[PartitionId, PartitionState] = field(default_factory=dict)


class MemoryBroker:
    """The shared state behind every :class:`MemoryDriver` connected to one name."""

    _registry: dict[str, MemoryBroker] = {}

    def __init__(self, partitions: int = 4) -> None:
        self.partition_count = partitions
        self.logs: dict[str, list[list[StoredRecord]]] = {}
        self.groups: dict[str, Group] = {}
        self._redelivery_seq = itertools.count()

    @classmethod
    def named(cls, name: str, partitions: int = 4) -> MemoryBroker:
        """The broker registered under ``name`` in this process (created on first use)."""
        broker = cls._registry.get(name)
        if broker is None:
            broker = cls._registry[name] = cls(partitions)
        return broker

    @classmethod
    def forget(cls, name: str) -> None:
        """Drop a named broker and everything it holds."""
        cls._registry.pop(name, None)

    # -- log ------------------------------------------------------------------------------------

    def partition_of(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partition_count

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
        for record in records:
            log = self.ensure_channel(record.channel)
            log[self.partition_of(record.key)].append(StoredRecord(record, now))
            touched.add(record.channel)
        for group in self.groups.values():
            for member in group.members:
                if any(member.matches(channel) for channel in touched):
                    member.wake()

    # -- groups ---------------------------------------------------------------------------------

    def join(self, member: Member, start: StartPosition) -> None:
        group = self.groups.setdefault(member.group_name, Group(member.group_name))
        group.members.append(member)
        member.start = start
        for channel in member.spec_channels:
            self.ensure_channel(channel)
        self.rebalance(group)

    def leave(self, member: Member) -> None:
        group = self.groups.get(member.group_name)
        if group is None or member not in group.members:
            return
        group.members.remove(member)
        if not group.members and member.ephemeral:
            del self.groups[member.group_name]  # a throwaway group leaves nothing behind
            return
        self.rebalance(group)

    def rebalance(self, group: Group) -> None:
        """Spread the group's partitions over its members, round robin, deterministically."""
        wanted: dict[PartitionId, list[Member]] = {}
        for channel in sorted(self.logs):
            eligible = [m for m in group.members if m.matches(channel)]
            if not eligible:
                continue
            for p in range(self.partition_count):
                wanted[(channel, p)] = eligible
        for member in group.members:
            member.assigned.clear()
        for index, (pid, eligible) in enumerate(sorted(wanted.items())):
            state = group.partitions.get(pid)
            owner = eligible[index % len(eligible)]
            if state is None:
                start_at = len(self.logs[pid[0]][pid[1]]) if owner.start == "latest" else 0
                state = group.partitions[pid] = PartitionState(committed=start_at)
            if state.owner is not owner:
                state.owner = owner
                owner.positions[pid] = state.committed
            owner.assigned.append(pid)
        for state in group.partitions.values():
            if state.owner is not None and state.owner not in group.members:
                state.owner = None
        for member in group.members:
            member.wake()

    def next_redelivery_seq(self) -> int:
        return next(self._redelivery_seq)
