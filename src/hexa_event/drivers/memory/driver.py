"""``memory://[name][?partitions=N]``: a process-local broker for tests and demos.

``memory://`` (no name) is a new, private broker for each ``connect``: what one test emits
never reaches another. Drivers connected with the same name (``memory://orders``, also
written ``memory:///orders``) share one broker for the life of the process, so an emitter
and a receiver built from separate ``connect`` calls see each other;
``MemoryBroker.forget(name)`` drops one. Consumer groups, per-key order (a key's
partition), redelivery after nack; nothing survives the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...driver import Driver, Features, RawRecord, SubscriptionSpec, check_records
from ...errors import ClosedError
from .broker import MemoryBroker
from .consumer import MemorySubscription
from .options import MemoryOptions

FEATURES = Features(
    name="memory",
    persistent=False,
    consumer_groups=True,
    ordered_per_key=True,
    patterns=True,
    delayed_publish=False,
    delayed_nack=True,
    new_group_reads_history=True,
)


class MemoryDriver(Driver):
    """A handle on a :class:`MemoryBroker`; closing it closes only its own subscriptions."""

    features = FEATURES

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._members: list[MemorySubscription] = []
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryDriver:
        name, parsed = MemoryOptions.from_url(url, **options)
        partitions = parsed.partitions
        if not name:
            return cls(MemoryBroker(partitions))  # unnamed: private to this connection
        return cls(MemoryBroker.named(name, partitions))

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("this memory driver was closed; connect() again")

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self._check_open()
        check_records(records)
        self.broker.append(list(records))

    async def provision(self, channels: Sequence[str]) -> None:
        self._check_open()
        for channel in channels:
            self.broker.ensure_channel(channel)

    async def subscribe(self, spec: SubscriptionSpec) -> MemorySubscription:
        self._check_open()
        member = MemorySubscription(self.broker, spec)
        self.broker.join(member, spec.start)
        self._members.append(member)
        return member

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for member in self._members:
            await member.close()
        self._members.clear()
