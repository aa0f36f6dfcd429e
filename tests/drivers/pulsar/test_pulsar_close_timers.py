"""A Pulsar subscription's close cancels the timers of its nacks with a delay longer than
the consumer's nack delay (they held the closed subscription, its consumer and each message
until their delay ran out: an hour's retry delay kept them an hour)."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from collections.abc import Awaitable, Callable

import pytest

from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.drivers.pulsar.consumer import PulsarSubscription

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]


async def _nack_one_and_close(driver: PulsarDriver) -> weakref.ref[PulsarSubscription]:
    channel = f"pt-{uuid.uuid4().hex[:10]}"
    await driver.provision([channel])
    spec = SubscriptionSpec(group=f"act-{channel}", channels=(channel,), ephemeral=True)
    subscription = await driver.subscribe(spec)
    assert isinstance(subscription, PulsarSubscription)
    await driver.publish([RawRecord(channel, "k", {}, b"x")])
    async with asyncio.timeout(30):
        batch = await subscription.fetch(1)
    batch[0].nack(3600.0)  # far longer than the nack delay: a timer of the driver's
    await subscription.settle(batch)
    await subscription.close()
    return weakref.ref(subscription)


async def test_close_cancels_the_timers_of_long_nacks(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    closed = await _nack_one_and_close(driver)
    gc.collect()
    assert closed() is None, "the closed subscription is still referenced (a nack timer?)"
