"""A message Pulsar hands out before its not-before time (Pulsar delivers a delayed message
up to one tick early, and its clock is not ours) is held by the driver until due, then
handed out once. Before, the driver nacked it: Pulsar sent it again after the nack delay
(a redelivery per early message, counted in its delivery count, and with a long nack delay
the message came that much late)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import pulsar
import pytest

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver, PulsarSubscriptionOptions, SubscriptionType
from hexa_event.drivers.pulsar.producer import NOT_BEFORE_PROPERTY

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]
EARLY = 1.5
"""Seconds before its not-before time the message arrives (no deliver-at: at once)."""


@pytest.mark.parametrize("nack_delay", [0.1, 10.0])
async def test_an_early_message_is_held_until_due_not_nacked(
    make_driver: MakeDriver, pulsar_url: str, nack_delay: float
) -> None:
    driver = await make_driver()
    tag = uuid.uuid4().hex[:10]
    channel = f"pe-{tag}"
    await driver.provision([channel])
    options = PulsarSubscriptionOptions(type=SubscriptionType.SHARED, nack_delay=nack_delay)
    subscription = await driver.subscribe(
        SubscriptionSpec(group=f"act-{tag}", channels=(channel,), options=options)
    )
    client = pulsar.Client(pulsar_url)
    try:
        producer = client.create_producer(f"persistent://public/default/{channel}")
        due = time.time() + EARLY
        props = {NOT_BEFORE_PROPERTY: str(int(due * 1000))}
        await asyncio.to_thread(producer.send, b"early", properties=props)
        async with asyncio.timeout(30):
            batch = await subscription.fetch(10)
        arrived = time.time()
        assert [d.record.body for d in batch] == [b"early"]
        assert arrived >= due - 0.01, "handed out before its not-before time"
        assert arrived < due + 2.0, f"handed out {arrived - due:.1f} s after it was due"
        assert batch[0].delivery_count == 1, "it went back to Pulsar and came again"
        batch[0].ack()
        await subscription.settle(batch)
        assert subscription.status().error == ""
    finally:
        await asyncio.to_thread(client.close)
