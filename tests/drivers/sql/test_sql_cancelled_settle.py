"""A settle cancelled midway (a signal, a timeout around it) must not wedge the subscription:
on SQLite, a write transaction cut short once left the file's write lock held by a dropped
connection, so the close that followed waited out the busy timeout and left the group's
positions behind (``hexa-event tail`` stopped by SIGTERM, about one run in twenty)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import hexa_event
from hexa_event.driver import RawRecord, Subscription, SubscriptionSpec

ATTEMPTS = 60


async def test_a_settle_cancelled_at_any_point_leaves_close_prompt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    channel = f"ch-{uuid.uuid4().hex[:8]}"
    first = hexa_event.connect(url).driver
    try:
        await first.publish([RawRecord(channel, f"k{i}", {}, b"x") for i in range(3000)])
    finally:
        await first.close()
    rng = random.Random(7)
    for attempt in range(ATTEMPTS):
        driver = hexa_event.connect(url).driver
        group = f"g-{attempt}-{uuid.uuid4().hex[:6]}"
        sub = await driver.subscribe(
            SubscriptionSpec(group=group, channels=(channel,), start="earliest", prefetch=500)
        )

        async def consume(sub: Subscription = sub) -> None:
            while True:
                deliveries = await sub.fetch(100)
                for delivery in deliveries:
                    delivery.ack()
                await sub.settle(deliveries)

        running = asyncio.ensure_future(consume())
        await asyncio.sleep(rng.uniform(0.02, 0.3))
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        began = time.monotonic()
        closing = asyncio.ensure_future(sub.close())
        done, _ = await asyncio.wait({closing}, timeout=5)
        took = time.monotonic() - began
        await asyncio.wait({closing})
        await driver.close()
        assert done, f"attempt {attempt}: close took {took:.1f}s after a cancelled settle"
