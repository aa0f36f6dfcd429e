"""A partitioned NATS subscription's close whose caller is cancelled still closes the
partitions' members: the close stopped where it was and a second close returned at once,
so their pull loops ran on, pulling records nobody fetched and keeping them in progress."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats_helpers import PARTITIONED_OPTIONS

import hexa_event as he
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.nats.partitioned import PartitionedSubscription
from hexa_event.testing.waiting import eventually


async def test_a_cancelled_close_still_closes_the_partitions(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = he.connect(nats_server, **PARTITIONED_OPTIONS).driver
    channel = f"pc-{uuid.uuid4().hex[:8]}"
    spec = SubscriptionSpec(group=f"g-{channel}", channels=(channel,), ephemeral=True)
    try:
        await driver.provision([channel])
        sub = await driver.subscribe(spec)
        assert isinstance(sub, PartitionedSubscription)
        await eventually(lambda: bool(sub._children), within=20, what="partitions taken")
        children = list(sub._children.values())
        leaving, release = asyncio.Event(), asyncio.Event()
        leave = PartitionedSubscription._leave

        async def slow_leave(self: PartitionedSubscription) -> None:
            leaving.set()
            await release.wait()
            await leave(self)

        monkeypatch.setattr(PartitionedSubscription, "_leave", slow_leave)
        closing = asyncio.create_task(sub.close())
        await asyncio.wait_for(leaving.wait(), 10)
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)
        release.set()
        await sub.close()  # a second close: a no-op
        await eventually(
            lambda: all(child._closed for child in children), within=20, what="members closed"
        )
    finally:
        await driver.close()
