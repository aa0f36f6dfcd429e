"""``stan://host:4223?cluster_id=...``: legacy NATS Streaming, its protocol spoken over nats-py.

One driver is one STAN session (one client id). What it guarantees, given STAN's semantics:

- ``publish`` returns once the server stored every record (its PubAck, sent after the
  store's flush). A record is never lost once acknowledged; it may be stored twice when an
  acknowledgement was lost to a dropped connection (the event id tells the copies apart).
- A subscription's group (the action) is a durable queue group per channel: every action
  gets every message, the processes of one action share them, and the group keeps its
  position and unacknowledged messages while no member runs.
- Delivery is at-least-once. A message not acknowledged within AckWait is delivered again
  (``Delivery.delivery_count`` counts it), possibly to another member of the group.
- Order: a channel is one ordered log and each member receives in order, but a queue group
  spreads consecutive messages of one key over its members and redeliveries come after
  newer messages, so ``features.ordered_per_key`` is False. Within one member the core
  runs one key's deliveries one at a time and in the order received.
- No channel patterns (STAN has no wildcard subscriptions), no delayed publish. A nack's
  delay is kept by leaving the message unacknowledged (see :mod:`.consumer`);
  ``features.delayed_nack`` follows ``StanOptions.delayed_nack``.
"""

from __future__ import annotations

import dataclasses
import uuid
import weakref
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient

from ...driver import Features, RawRecord, SubscriptionSpec
from ...redaction import redact_urls
from ..kit.driver import KitDriver
from .consumer import StanSubscription
from .options import StanOptions, check_channel
from .producer import StanProducer
from .session import StanSession


class StanDriver(KitDriver):
    """A NATS Streaming client session; nothing connects before the first use.

    ``nc``: an open nats-py connection to use instead of opening one (it is not closed by
    :meth:`close`). The session's connect errors are
    :class:`~hexa_event.drivers.stan.StanClusterNotFoundError` (wrong cluster id or not a
    streaming server) and :class:`~hexa_event.drivers.stan.StanClientIdInUseError`.
    """

    options_type = StanOptions
    handed_over = ("nc",)

    def __init__(self, options: StanOptions, *, nc: NatsClient | None = None) -> None:
        super().__init__()
        self.options = options
        self.features = Features(
            name="stan",
            persistent=True,
            ordered_per_key=False,
            patterns=False,
            delayed_nack=options.delayed_nack,
        )
        self.session = StanSession(options, nc)
        self._producer = StanProducer(self.session)
        # Open ones stay: the session and their NATS subscriptions hold them.
        self.subscriptions: weakref.WeakSet[StanSubscription] = weakref.WeakSet()

    def __repr__(self) -> str:
        return (
            f"StanDriver(servers={redact_urls(self.options.servers)!r}, "
            f"cluster_id={self.options.cluster_id!r}, client_id={self.options.client_id!r})"
        )

    async def connect(self) -> StanDriver:
        """Open the session now (it opens on first use otherwise); raises connect errors."""
        self.check_open()
        await self.session.start()
        return self

    async def check(self, within: float = 10.0) -> str:
        """Open a STAN session as publish would (under a client id of its own, so a running
        service keeps its own), then close it: a wrong cluster id or a server that is not a
        streaming server raises :class:`~.StanClusterNotFoundError`."""
        self.check_open()
        client_id = f"{self.options.client_id}-check-{uuid.uuid4().hex[:8]}"[:64]
        options = dataclasses.replace(
            self.options, client_id=client_id, connect_timeout=min(within, 30.0)
        )
        session = StanSession(options, None)
        try:
            await session.start()
        finally:
            await session.close()
        return f"streaming server of cluster {self.options.cluster_id!r} answered"

    async def send(self, records: Sequence[RawRecord]) -> None:
        await self.session.start()
        await self._producer.publish(records)

    async def provision(self, channels: Sequence[str]) -> None:
        """Validate the names: STAN creates a channel on its first publish or subscribe."""
        self.check_open()
        for channel in channels:
            check_channel(channel)

    async def subscribe(self, spec: SubscriptionSpec) -> StanSubscription:
        self.check_open()
        await self.session.wait_ready(self.options.ack_timeout)  # rides out a recovery
        subscription = StanSubscription(self.session, spec, self.options)
        await subscription.open()
        self.subscriptions.add(subscription)
        return subscription

    async def close_engine(self) -> None:
        await self.session.close()
