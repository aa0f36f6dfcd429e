"""A record whose headers are any mapping is published: a Kafka delivery's own record
(its headers the client's pairs, read-only) forwarded as it is, a handler's read-only view."""

from __future__ import annotations

import asyncio
import uuid
from types import MappingProxyType

import pytest

from hexa_event.driver import PairHeaders, RawRecord, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver

pytestmark = pytest.mark.kafka


async def test_records_with_read_only_headers_are_published(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    first, second = f"kf-{tag}", f"kf2-{tag}"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap)
    try:
        await driver.publish(
            [RawRecord(first, "k", MappingProxyType({"n": b"1", "x": b"a"}), b"body")]
        )
        sub = await driver.subscribe(SubscriptionSpec(group=f"kg-{tag}", channels=(first,)))
        async with asyncio.timeout(30):
            (delivery,) = await sub.fetch(1)
        assert isinstance(delivery.record.headers, PairHeaders)
        forwarded = RawRecord(second, "k", delivery.record.headers, delivery.record.body)
        await driver.publish([forwarded])  # a delivery's record, forwarded as it is
        other = await driver.subscribe(SubscriptionSpec(group=f"kg2-{tag}", channels=(second,)))
        async with asyncio.timeout(30):
            (again,) = await other.fetch(1)
        assert again.record.headers == {"n": b"1", "x": b"a"}
        assert again.record.body == b"body"
    finally:
        await driver.close()
