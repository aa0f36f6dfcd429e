"""A NATS member's close whose caller is cancelled still gives back what it holds: the
close stopped where it was and a second close returned at once, so the records handed out
and not settled waited ack_wait (30 s) before another member got them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS

import hexa_event as he
from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.nats import consumer as nats_consumer


async def test_a_cancelled_close_still_gives_back(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = he.connect(nats_server, **TEST_OPTIONS).driver
    channel = f"cc-{uuid.uuid4().hex[:8]}"
    spec = SubscriptionSpec(group=f"g-{channel}", channels=(channel,))
    try:
        await driver.provision([channel])
        first = await driver.subscribe(spec)
        await driver.publish([RawRecord(channel, "k", {}, b"held")])
        async with asyncio.timeout(10):
            held = await first.fetch(10)
        assert [d.record.body for d in held] == [b"held"]
        leaving, release = asyncio.Event(), asyncio.Event()
        stop_interest = nats_consumer.stop_interest

        async def slow_stop(*args: Any) -> None:
            leaving.set()
            await release.wait()
            await stop_interest(*args)

        monkeypatch.setattr(nats_consumer, "stop_interest", slow_stop)
        closing = asyncio.create_task(first.close())
        await asyncio.wait_for(leaving.wait(), 10)
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)
        release.set()
        await first.close()  # a second close: a no-op
        second = await driver.subscribe(spec)
        async with asyncio.timeout(10):  # ack_wait is 30 s
            batch = await second.fetch(10)
        assert [d.record.body for d in batch] == [b"held"]
        for delivery in batch:
            delivery.ack()
        await second.settle(batch)
    finally:
        await driver.close()
