"""How a Pulsar subscription's messages reach the loop (docs/engines/pulsar.md, "Inside the
driver"), two things the throughput depends on:

- one channel is read by a single-topic consumer: pulsar-client makes a multi-topics
  consumer of a list of topics, even of one, and that consumer hands every message to
  another client thread before ``receive`` sees it (one thread wake-up per two events);
  several channels still share one multi-topics consumer, and both kinds deliver;
- a settle fills the places it frees itself, from what the receive thread has ready: the
  loop does not wait for the thread to be scheduled and take the GIL to hand over more.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from hexa_event.driver import Delivery, RawRecord, SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.testing import eventually

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]


async def test_one_channel_is_read_by_a_single_topic_consumer(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    tag = uuid.uuid4().hex[:10]
    one, two, three = f"pk1-{tag}", f"pk2-{tag}", f"pk3-{tag}"
    await driver.provision([one, two, three])
    single = await driver.subscribe(SubscriptionSpec(group=f"a1-{tag}", channels=(one,)))
    several = await driver.subscribe(SubscriptionSpec(group=f"a2-{tag}", channels=(two, three)))
    assert isinstance(single, PulsarSubscription)
    assert isinstance(several, PulsarSubscription)

    # A multi-topics consumer names itself "<first topic>-TopicsConsumerFakeName-<id>".
    topics = [reader.consumer.topic() for reader in single._readers]
    assert topics == [driver.options.topic(one)]
    assert "TopicsConsumerFakeName" in several._readers[0].consumer.topic()

    await driver.publish([RawRecord(c, "k", {}, c.encode()) for c in (one, two, three)])
    got: list[bytes] = []
    async with asyncio.timeout(60):
        for subscription, count in ((single, 1), (several, 2)):
            taken = 0
            while taken < count:
                batch = await subscription.fetch(count - taken)
                for delivery in batch:
                    delivery.ack()
                    got.append(delivery.record.body)
                await subscription.settle(batch)
                taken += len(batch)
    assert sorted(got) == sorted(c.encode() for c in (one, two, three))


async def test_a_settle_hands_out_the_next_deliveries_itself(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    channel = f"pk-{uuid.uuid4().hex[:10]}"
    await driver.provision([channel])
    await driver.publish([RawRecord(channel, f"k{n}", {}, b"%d" % n) for n in range(6)])
    spec = SubscriptionSpec(group=f"a-{channel}", channels=(channel,), prefetch=3)
    subscription = await driver.subscribe(spec)
    assert isinstance(subscription, PulsarSubscription)
    first: list[Delivery] = []
    async with asyncio.timeout(60):
        while len(first) < 3:
            first += await subscription.fetch(3 - len(first))
    reader = subscription._readers[0]
    # The window is full; the receive thread receives the next three ahead of need.
    await eventually(lambda: len(reader._ready) == 3, what="three messages ready")
    for delivery in first:
        delivery.ack()
    await subscription.settle(first)
    assert len(subscription.buffer) == 3  # handed out by the settle, no thread hop
    rest = await subscription.fetch(3)
    assert sorted(d.record.body for d in first + rest) == [b"%d" % n for n in range(6)]
