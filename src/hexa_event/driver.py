"""The driver contract: the only thing a broker integration implements.

A driver moves raw records; it knows nothing of codecs, contexts, retries or dedup keys,
which the core does once for every driver. The whole contract:

- :meth:`Driver.publish` takes a batch of :class:`RawRecord` and returns only when the broker
  (or database) has durably accepted every record of the batch; it raises
  :class:`~hexa_event.errors.DriverError` otherwise, and then any subset may have been stored.
- :meth:`Driver.subscribe` opens a :class:`Subscription` for one consumer group: every group
  receives every record of its channels; the subscriptions of one group share the records,
  and a record with a given key is handed to one subscription at a time, in publish order.
- :meth:`Subscription.fetch` returns the next deliveries; each is settled exactly once by
  :meth:`Delivery.ack` (done: never delivered to this group again) or :meth:`Delivery.nack`
  (give it back: delivered again, to this group, no earlier than the delay). A delivery that
  is never settled before its subscription closes is delivered again later.
- :meth:`Subscription.close` stops fetching and releases the group membership; acks made
  before it are kept. Closing twice is harmless.

A driver declares what it can do in :class:`Features`; the conformance suite
(:mod:`hexa_event.testing`) reads them to decide which guarantees to check.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from .codecs import Codec
    from .emitter import Emitter
    from .middleware import Middleware
    from .propagation import Propagator
    from .receiver import Receiver

StartPosition = Literal["earliest", "latest"]


class RawRecord(msgspec.Struct, frozen=True):
    """A record as the broker carries it: channel, key, headers and an opaque body."""

    channel: str
    key: str
    headers: Mapping[str, bytes]
    body: bytes


@dataclass(frozen=True, slots=True)
class Features:
    """What a driver guarantees; the conformance suite enables its checks from these."""

    name: str
    persistent: bool
    """Records survive the driver's process (and a broker restart)."""
    consumer_groups: bool = True
    """Each group receives every record; members of one group share them."""
    ordered_per_key: bool = True
    """Records of one key reach one group in publish order."""
    patterns: bool = True
    """``subscribe`` accepts a channel pattern (a regular expression)."""
    native_delayed_redelivery: bool = False
    """``nack(delay)`` is honoured by the broker itself rather than a local timer."""
    exclusive_subscriptions: bool = False
    """The broker can refuse a second exclusive consumer (raises SubscriptionBusyError)."""
    new_group_reads_history: bool = True
    """A new group starting at ``earliest`` sees records published before it existed."""
    restartable: bool = False
    """The test services can restart the broker mid-test (enables reconnect checks)."""


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """What the core asks a driver to subscribe to."""

    group: str
    """Consumer group: the handler's action (or the name the options override it with)."""
    channels: tuple[str, ...] = ()
    pattern: str | None = None
    """A regular expression matched against whole channel names, in addition to
    ``channels`` (the subscription covers both)."""
    start: StartPosition = "earliest"
    """Where a group with no stored position begins."""
    prefetch: int = 256
    """Upper bound on deliveries handed out and not yet settled."""
    options: Any = None
    """The driver's own typed subscription options (the Go library's ``Extra``), or None."""


class Delivery(abc.ABC):
    """One record handed to one group member; settle it once with ack or nack."""

    __slots__ = ("coordinates", "delivery_count", "record", "timestamp")

    def __init__(
        self,
        record: RawRecord,
        *,
        coordinates: str,
        delivery_count: int = 1,
        timestamp: float | None = None,
    ) -> None:
        self.record = record
        self.coordinates = coordinates
        """Where the broker keeps it, e.g. ``orders-2-1532``: the id of last resort."""
        self.delivery_count = delivery_count
        """1 on first delivery to this group; higher on broker redelivery, when known."""
        self.timestamp = timestamp
        """Broker time of the record, seconds since the epoch, when known."""

    @property
    def native(self) -> object:
        """The broker client's own message object (an escape hatch)."""
        return None

    @abc.abstractmethod
    async def ack(self) -> None:
        """Mark handled: the group never receives this record again (barring a crash)."""

    @abc.abstractmethod
    async def nack(self, delay: float = 0.0) -> None:
        """Give the record back: the group receives it again no earlier than ``delay`` s."""


class Subscription(abc.ABC):
    """A group member's stream of deliveries."""

    @abc.abstractmethod
    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        """Wait for and return 1..max_count deliveries; return ``[]`` once closed.

        Deliveries of one key come in publish order (when ``features.ordered_per_key``); the
        core runs them one after another, so a driver may hand out many at once. Deliveries
        may be settled in any order: a driver that tracks positions must never move its
        stored position past an unsettled delivery. Cancelling the call loses nothing.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop fetching, keep acks made so far, leave the group. Idempotent."""


class Driver(abc.ABC):
    """A broker integration. Make emitters and receivers from it; close it last."""

    features: Features

    @abc.abstractmethod
    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Store every record; return only once the broker has durably accepted all."""

    @abc.abstractmethod
    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join ``spec.group`` on the given channels or pattern and return the member.

        Raises :class:`~hexa_event.errors.SubscriptionBusyError` when the broker refuses
        (for example a second exclusive consumer).
        """

    async def provision(self, channels: Sequence[str]) -> None:
        """Make sure the channels exist (topics, streams); a no-op where none is needed."""
        del channels

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection. Idempotent."""

    async def __aenter__(self) -> Driver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the public face, shared by every driver -------------------------------------------

    def emitter(
        self,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        source: str | None = None,
    ) -> Emitter:
        """An emitter that encodes with ``codec`` and propagates context into headers."""
        from .emitter import Emitter

        return Emitter(self, codec=codec, propagator=propagator, source=source)

    def receiver(
        self,
        name: str,
        *,
        middlewares: Sequence[Middleware] = (),
        propagator: Propagator | None = None,
        drain_timeout: float = 30.0,
        concurrency: int = 64,
    ) -> Receiver:
        """A receiver for the service ``name``; subscribe handlers to it, then start it."""
        from .receiver import Receiver

        return Receiver(
            self,
            name=name,
            middlewares=middlewares,
            propagator=propagator,
            drain_timeout=drain_timeout,
            concurrency=concurrency,
        )
