"""A Pulsar subscription reads one channel with a single-topic consumer: pulsar-client makes
a multi-topics consumer of a list of topics, even of one, and that consumer hands every
message to another client thread before ``receive`` sees it (one thread wake-up for every
message or two; the driver alone ran at 0.7-0.8 of the same loop on a single-topic consumer).
Several channels still share one multi-topics consumer, and both kinds deliver."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.drivers.pulsar.consumer import PulsarSubscription

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
