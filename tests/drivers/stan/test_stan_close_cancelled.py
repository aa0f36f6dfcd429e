"""A STAN subscription's close whose caller is cancelled still leaves every channel: it
stopped at the channel it was leaving and a second close returned at once, so the other
channels' server subscriptions stayed (the server went on sending their share of a queue
group to a member that dropped everything, redelivered only after AckWait each time)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import hexa_event as he
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.stan.consumer import ChannelMember, StanSubscription
from hexa_event.testing.waiting import eventually


async def test_a_cancelled_close_still_leaves_every_channel(
    stan_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = he.connect(stan_url).driver
    tag = uuid.uuid4().hex[:8]
    spec = SubscriptionSpec(group=f"g-{tag}", channels=(f"a-{tag}", f"b-{tag}"), ephemeral=True)
    try:
        sub = await driver.subscribe(spec)
        assert isinstance(sub, StanSubscription)
        leaving, release = asyncio.Event(), asyncio.Event()
        close = ChannelMember.close

        async def slow_close(self: ChannelMember, *, unsubscribe: bool) -> None:
            if self is sub.members[0]:
                leaving.set()
                await release.wait()
            await close(self, unsubscribe=unsubscribe)

        monkeypatch.setattr(ChannelMember, "close", slow_close)
        closing = asyncio.create_task(sub.close())
        await asyncio.wait_for(leaving.wait(), 10)
        closing.cancel()
        await asyncio.gather(closing, return_exceptions=True)
        release.set()
        await sub.close()  # a second close: a no-op
        await eventually(
            lambda: all(m.nats_sub is None for m in sub.members),
            within=10,
            what="every channel left",
        )
    finally:
        await driver.close()
