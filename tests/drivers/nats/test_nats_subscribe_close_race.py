"""A subscribe that the driver's close overtakes (close lands while the consumer is being
joined) raises ClosedError and closes what it made, rather than returning a subscription
the closed driver no longer knows (never closed, its pull loop left running)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS

import hexa_event as he
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.nats.consumer import NatsSubscription
from hexa_event.errors import ClosedError


async def test_a_subscribe_overtaken_by_close_raises_closed(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = he.connect(nats_server, **TEST_OPTIONS).driver
    channel = f"race-{uuid.uuid4().hex[:8]}"
    started: list[NatsSubscription] = []
    start = NatsSubscription.start

    async def start_then_close(self: NatsSubscription, *args: Any) -> None:
        await start(self, *args)
        started.append(self)
        await driver.close()  # another task's close, landing at the subscribe's last await

    monkeypatch.setattr(NatsSubscription, "start", start_then_close)
    try:
        spec = SubscriptionSpec(group=f"g-{channel}", channels=(channel,), ephemeral=True)
        with pytest.raises(ClosedError):
            await driver.subscribe(spec)
        assert [sub._closed for sub in started] == [True]
    finally:
        await driver.close()
