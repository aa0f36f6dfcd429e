"""``memory://[name][?partitions=N]``: a process-local broker for tests and demos.

``memory://`` (no name) is a new, private broker for each ``connect``: what one test emits
never reaches another. Drivers connected with the same name (``memory://orders``, also
written ``memory:///orders``) share one broker for the life of the process, so an emitter
and a receiver built from separate ``connect`` calls see each other;
``MemoryBroker.forget(name)`` drops one. Consumer groups, per-key order (a key's
partition), redelivery after nack; nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...driver import Features, RawRecord, SubscriptionSpec
from ..kit.driver import KitDriver
from .broker import MemoryBroker
from .consumer import MemorySubscription
from .options import MemoryOptions

FEATURES = Features(name="memory", persistent=False, delayed_nack=True)


class MemoryDriver(KitDriver):
    """A handle on a :class:`MemoryBroker`; closing it closes only its own subscriptions."""

    features = FEATURES
    options_type = MemoryOptions

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        super().__init__()
        self.broker = broker or MemoryBroker()

    @classmethod
    def from_options(cls, options: MemoryOptions, **handed: object) -> MemoryDriver:
        del handed
        if not options.name:
            return cls(MemoryBroker(options.partitions))  # unnamed: private to this connection
        return cls(MemoryBroker.named(options.name, options.partitions))

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
        self.broker.join(member, spec.start)
        self.subscriptions.add(member)
        return member
