"""``memory://[name][?partitions=N]``: a process-local broker for tests and demos.

``memory://`` is a new broker private to each ``connect``; ``memory://NAME`` the broker
shared in the process under that name (docs/engines/memory.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...driver import Features, RawRecord, SubscriptionSpec
from ..kit.driver import KitDriver
from .broker import MemoryBroker
from .consumer import MemorySubscription
from .options import MemoryOptions


class MemoryDriver(KitDriver):
    """A handle on a :class:`MemoryBroker`; closing it closes only its own subscriptions."""

    features = Features(name="memory", persistent=False, delayed_nack=True)
    options_type = MemoryOptions

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        super().__init__()
        self.broker = broker or MemoryBroker()

    @classmethod
    def from_options(cls, options: MemoryOptions, **handed: object) -> MemoryDriver:
        name, partitions = options.name, options.partitions  # unnamed: a private broker
        return cls(MemoryBroker.named(name, partitions) if name else MemoryBroker(partitions))

    async def check(self, within: float = 10.0) -> str:
        del within
        return "the in-process memory broker: nothing to reach; events live only in one process"

    async def send(self, records: Sequence[RawRecord]) -> None:
        self.broker.append(list(records))

    async def create_channels(self, channels: Sequence[str]) -> Mapping[str, int]:
        for channel in channels:
            self.broker.ensure_channel(channel)
        return dict.fromkeys(channels, self.broker.partition_count)

    async def subscribe(self, spec: SubscriptionSpec) -> MemorySubscription:
        self.check_open()
        member = MemorySubscription(self.broker, spec)
        self.broker.join(member.member)
        self.subscriptions.add(member)
        return member
