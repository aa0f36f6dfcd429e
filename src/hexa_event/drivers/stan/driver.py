"""``stan://host:4223?cluster_id=...``: legacy NATS Streaming, its protocol spoken over
nats-py. One driver is one STAN session (one client id); what it guarantees given STAN's
semantics (storage, groups, at-least-once delivery, order) is in docs/engines/stan.md.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

from nats.aio.client import Client as NatsClient

from ...driver import Features, RawRecord, SubscriptionSpec
from ..kit.driver import KitDriver
from .consumer import StanSubscription
from .options import StanOptions, StanSubscriptionOptions, check_channel
from .producer import publish
from .session import StanSession


class StanDriver(KitDriver):
    """A NATS Streaming client session; nothing connects before the first use. ``nc``: an
    open nats-py connection to use (not closed by :meth:`close`). Connect errors:
    :class:`~.StanClusterNotFoundError`, :class:`~.StanClientIdInUseError`."""

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
        self.subscriptions = self.session.members  # the open ones, closed with the driver

    async def connect(self) -> StanDriver:
        """Open the session now (it opens on first use otherwise); raises connect errors."""
        self.check_open()
        await self.session.start()
        return self

    async def check(self, within: float = 10.0) -> str:
        """Open and close a STAN session under a client id of its own (a running service
        keeps its own); :class:`~.StanClusterNotFoundError` for a wrong cluster id."""
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
        await publish(self.session, records)

    async def provision(self, channels: Sequence[str]) -> None:
        """Validate the names: STAN creates a channel on its first publish or subscribe."""
        self.check_open()
        for channel in channels:
            check_channel(channel)

    async def subscribe(self, spec: SubscriptionSpec) -> StanSubscription:
        self.check_open()
        self.subscription_options(spec, StanSubscriptionOptions)
        await self.session.wait_ready(self.options.ack_timeout)  # rides out a recovery
        subscription = StanSubscription(self.session, spec)
        await subscription.open()  # and joins the session's members
        await self.keep(subscription)
        return subscription

    async def close_engine(self) -> None:
        await self.session.close()
