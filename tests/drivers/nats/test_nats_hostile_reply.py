"""A delivery whose ack subject holds a timestamp of hundreds of digits or negative
numbers, or a pull status with a pending count of 5,000 digits (only a broken or hostile
server sends them): the first two are ignored with a warning naming the subject, the last
is a pull's end, and the member goes on. Before, reading the first and last raised
(OverflowError, ValueError) inside nats-py's callback: the driver logged a client error
"(reconnecting)" although the connection was fine; the negative numbers made a delivery."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats_helpers import TEST_OPTIONS, nats_url

from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.nats import NatsDriver
from hexa_event.drivers.nats.consumer import NatsSubscription

pytestmark = pytest.mark.nats


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("hexa_event")
    ]


@pytest.fixture
async def driver(nats_server: str) -> AsyncIterator[NatsDriver]:
    made = NatsDriver.from_url(nats_server, **TEST_OPTIONS)
    yield made
    await made.close()


# The server lets no client reply on $JS.ACK: the driver reads any prefix the same.
HOSTILE_REPLY = "hostile.ACK.HEXA_TEST.c.1.7.7." + "9" * 400 + ".0"
HOSTILE_STATUS = {"Status": "408", "Nats-Pending-Messages": "9" * 5000}  # a pull's end
# Numbers no server sends (counts and sequences start at 1): taken as a delivery before.
NEGATIVE_REPLY = "hostile.ACK.HEXA_TEST.c.-1.-7.-7.0.0"


@pytest.mark.parametrize("hostile", ["reply", "status", "negative"])
async def test_absurd_numbers_from_the_server_are_no_client_error(
    driver: NatsDriver, caplog: pytest.LogCaptureFixture, hostile: str
) -> None:
    tag = uuid.uuid4().hex[:10]
    channel = f"nh-{tag}"
    sub = await driver.subscribe(SubscriptionSpec(group=f"grp-{tag}", channels=(channel,)))
    assert isinstance(sub, NatsSubscription)
    other = await nats.connect(nats_url())
    try:
        with caplog.at_level(logging.WARNING, logger="hexa_event.drivers.nats"):
            if hostile != "status":
                reply = HOSTILE_REPLY if hostile == "reply" else NEGATIVE_REPLY
                await other.publish(sub._inbox, b"x", reply=reply)
            else:
                await other.publish(sub._inbox, b"", headers=HOSTILE_STATUS)
            await other.flush()  # routed to the inbox before the record below
            await driver.publish([RawRecord(channel, "k", {}, b"real")])
            async with asyncio.timeout(20):
                got = await sub.fetch(10)
    finally:
        await other.close()
    assert [d.record.body for d in got] == [b"real"]
    warnings = _warnings(caplog)
    assert not any("NATS client" in w for w in warnings), warnings
    if hostile != "status":
        assert any("unexpected reply subject" in w for w in warnings), warnings
    assert sub.status().error == ""
    for delivery in got:
        delivery.ack()
    await sub.settle(got)
