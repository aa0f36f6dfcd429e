"""A STAN subscription joins all its channels at once (a receiver's spec lists its retry
channels too: one round trip to the server each, made one after the other before), and a
refused join still fails the subscribe, naming the channel, with the other channels left."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.stan.consumer import StanSubscription
from hexa_event.drivers.stan.protocol import SubscriptionRequest
from hexa_event.drivers.stan.session import StanSession
from hexa_event.errors import DriverError

pytestmark = pytest.mark.stan


async def test_every_channel_is_joined_at_once(
    stan_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = StanSession.request
    in_flight = most = 0

    async def counted(self: StanSession, subject: str, message: Any, *args: Any) -> Any:
        nonlocal in_flight, most
        if not isinstance(message, SubscriptionRequest):
            return await request(self, subject, message, *args)
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await request(self, subject, message, *args)
        finally:
            in_flight -= 1

    monkeypatch.setattr(StanSession, "request", counted)
    driver = he.connect(stan_url).driver
    tag = uuid.uuid4().hex[:8]
    channels = tuple(f"j{n}-{tag}" for n in range(5))
    try:
        sub = await driver.subscribe(SubscriptionSpec(group=f"g-{tag}", channels=channels))
        assert isinstance(sub, StanSubscription)
        assert most == len(channels)
        assert all(member.ack_inbox for member in sub.members)  # every one joined
        await driver.publish([he.driver.RawRecord(channels[3], "k", {}, b"x")])
        async with asyncio.timeout(10):
            [delivery] = await sub.fetch(10)
        assert delivery.record.channel == channels[3]
        delivery.ack()
        await sub.settle([delivery])
        await sub.unsubscribe()
    finally:
        await driver.close()


async def test_a_refused_join_fails_the_subscribe_and_leaves_the_others(
    stan_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = StanSession.request
    tag = uuid.uuid4().hex[:8]
    refused = f"refused-{tag}"

    joined = 0
    others_joined = asyncio.Event()

    async def refuse_one(self: StanSession, subject: str, message: Any, *args: Any) -> Any:
        nonlocal joined
        if not isinstance(message, SubscriptionRequest):
            return await request(self, subject, message, *args)
        if message.subject == refused:  # refused once the other joins ended (at once only)
            await asyncio.wait_for(others_joined.wait(), 10)
            raise DriverError(f"no join for {refused}")
        try:
            return await request(self, subject, message, *args)
        finally:
            joined += 1
            if joined == 2:
                others_joined.set()

    monkeypatch.setattr(StanSession, "request", refuse_one)
    driver = he.connect(stan_url).driver
    left: list[str] = []
    leave = StanSession.close_subscription

    async def recorded(self: StanSession, channel: str, ack_inbox: str, **kw: Any) -> Any:
        left.append(channel)
        return await leave(self, channel, ack_inbox, **kw)

    monkeypatch.setattr(StanSession, "close_subscription", recorded)
    channels = (f"a-{tag}", refused, f"b-{tag}")
    try:
        with pytest.raises(DriverError, match=f"no join for {refused}"):
            await driver.subscribe(SubscriptionSpec(group=f"g-{tag}", channels=channels))
        assert sorted(c for c in left if c != refused) == sorted([f"a-{tag}", f"b-{tag}"])
        assert not driver.session.members  # type: ignore[attr-defined]
    finally:
        await driver.close()
