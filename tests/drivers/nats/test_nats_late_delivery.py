"""A delivery the server sends a closed member after its close stopped waiting for the
server (the PING round trip behind the UNSUB timed out: a slow server or link) goes back
at once: another member gets it within seconds, not after ``ack_wait`` (30 s), which is
how long it waited when the member's inbox was dropped on the timeout."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS

import hexa_event as he
from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.nats import client as nats_client
from hexa_event.drivers.nats.consumer import NatsSubscription


async def test_a_delivery_after_a_timed_out_close_goes_back_at_once(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = he.connect(nats_server, **TEST_OPTIONS).driver
    channel = f"late-{uuid.uuid4().hex[:8]}"
    spec = SubscriptionSpec(group=f"g-{channel}", channels=(channel,))
    try:
        await driver.provision([channel])
        first = await driver.subscribe(spec)
        assert isinstance(first, NatsSubscription)

        async def no_pong(*_: Any) -> None:
            raise TimeoutError("no PONG (a slow server)")

        async def unsub_not_yet_seen(*_: Any, **__: Any) -> None:
            """The UNSUB is on its way: the server still delivers to the inbox."""

        monkeypatch.setattr(nats_client, "confirm", no_pong)
        monkeypatch.setattr(first._nc, "_send_unsubscribe", unsub_not_yet_seen)
        await first.close()  # its pull is still open at the server
        await driver.publish([RawRecord(channel, "k", {}, b"late")])
        second = await driver.subscribe(spec)
        async with asyncio.timeout(10):  # ack_wait is 30 s
            batch = await second.fetch(10)
        assert [d.record.body for d in batch] == [b"late"]
        for delivery in batch:
            delivery.ack()
        await second.settle(batch)
    finally:
        await driver.close()
