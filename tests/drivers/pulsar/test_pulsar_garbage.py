"""Messages a foreign producer put on a topic, with properties the Pulsar driver cannot read."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pulsar
import pytest

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver, PulsarSubscriptionOptions, SubscriptionType
from hexa_event.drivers.pulsar.producer import NOT_BEFORE_PROPERTY

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]

GARBAGE = ["\u00b2", "9" * 400, "9" * 5000, "1e5", "-1", ""]


async def test_a_garbage_not_before_time_is_no_time(
    make_driver: MakeDriver, pulsar_url: str
) -> None:
    """A not-before property that str.isdigit() accepts but int() refuses ("²"), 400 or
    5,000 digits, or no number at all: the message is delivered at once (as if it had no
    not-before time), with its other properties, and the subscription goes on. Before, reading
    the batch raised: the batch vanished with its places of the prefetch window, or (since a
    review fix) the whole subscription failed on one foreign message."""
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
        for index, value in enumerate(GARBAGE):
            props = {NOT_BEFORE_PROPERTY: value, "n": str(index)}
            await asyncio.to_thread(producer.send, b"x", properties=props)
        await asyncio.to_thread(producer.send, b"last", properties={"n": "last"})
        seen: list[bytes] = []
        async with asyncio.timeout(60):
            while len(seen) < len(GARBAGE) + 1:
                batch = await subscription.fetch(10)
                for delivery in batch:
                    seen.append(delivery.record.headers["n"])
                    assert NOT_BEFORE_PROPERTY not in delivery.record.headers
                    delivery.ack()
                await subscription.settle(batch)
        assert sorted(seen) == sorted([str(i).encode() for i in range(len(GARBAGE))] + [b"last"])
        assert subscription.status().error == ""
    finally:
        client.close()


async def test_a_key_or_property_that_is_not_utf8_is_left_out(
    make_driver: MakeDriver, pulsar_url: str
) -> None:
    """A foreign producer (Go, C++) may set a key or property of bytes that are not UTF-8:
    pulsar-client raises UnicodeDecodeError reading them. The message is delivered without
    what is not UTF-8, with the rest (a key that is not UTF-8 lost the properties, and a
    property the key), and the subscription goes on; before, that one message failed the
    subscription (every fetch raised DriverError)."""
    driver = await make_driver()
    tag = uuid.uuid4().hex[:10]
    channel = f"pu-{tag}"
    await driver.provision([channel])
    subscription = await driver.subscribe(SubscriptionSpec(group=f"act-{tag}", channels=(channel,)))
    client = pulsar.Client(pulsar_url)
    try:
        producer = client.create_producer(f"persistent://public/default/{channel}")
        for key, value in ((b"\xff", b"ok"), (b"k", b"\xfe\xff")):
            builder = pulsar._pulsar.MessageBuilder()  # type: ignore[attr-defined]
            builder.content(b"foreign").partition_key(key).property(b"p", value)
            await asyncio.to_thread(producer._producer.send, builder.build())
        await asyncio.to_thread(producer.send, b"last", properties={"n": "last"}, partition_key="k")
        seen: list[tuple[str, dict[str, bytes], bytes]] = []
        async with asyncio.timeout(60):
            while len(seen) < 3:
                batch = await subscription.fetch(10)
                for delivery in batch:
                    record = delivery.record
                    seen.append((record.key, dict(record.headers), record.body))
                    delivery.ack()
                await subscription.settle(batch)
        assert sorted(seen, key=repr) == [
            ("", {"p": b"ok"}, b"foreign"),
            ("k", {"n": b"last"}, b"last"),
            ("k", {}, b"foreign"),
        ]
        assert subscription.status().error == ""
    finally:
        client.close()
