"""Messages a foreign producer put on a topic that the Pulsar driver cannot read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pulsar
import pytest

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver, PulsarSubscriptionOptions, SubscriptionType
from hexa_event.drivers.pulsar.wire import NOT_BEFORE_PROPERTY
from hexa_event.errors import DriverError

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]


async def test_an_unreadable_message_fails_the_subscription_loudly(
    make_driver: MakeDriver, pulsar_url: str
) -> None:
    """A not-before property that str.isdigit() accepts but int() refuses ("²") makes
    reading the batch raise on the loop: the subscription fails (every fetch raises), it
    does not lose the batch silently with its places of the prefetch window never freed."""
    driver = await make_driver()
    tag = uuid.uuid4().hex[:10]
    channel, action = f"pg-{tag}", f"act-{tag}"
    await driver.provision([channel])
    options = PulsarSubscriptionOptions(type=SubscriptionType.SHARED)
    subscription = await driver.subscribe(
        SubscriptionSpec(group=action, channels=(channel,), options=options)
    )
    client = pulsar.Client(pulsar_url)
    try:
        producer = client.create_producer(f"persistent://public/default/{channel}")
        await asyncio.to_thread(producer.send, b"x", properties={NOT_BEFORE_PROPERTY: "\u00b2"})
        with pytest.raises(DriverError, match="ValueError"):
            async with asyncio.timeout(30):
                await subscription.fetch(10)
    finally:
        client.close()
