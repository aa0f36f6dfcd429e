"""SQL lag: rows past the group's stored positions, plus what it gave back with a delay
(``hexa_redeliveries``), minus what it acked above them (``hexa_acked``); SQLite and
PostgreSQL, through the driver contract."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import hexa_event
from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def driver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlDriver]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
    else:
        from hexa_event_services import require_service

        url = require_service("postgres").url
    d = hexa_event.connect(url, lease_ttl=3.0, heartbeat_interval=0.2).driver
    assert isinstance(d, SqlDriver)
    yield d
    await d.close()


async def take(subscription: Subscription, count: int) -> list[Delivery]:
    out: list[Delivery] = []
    async with asyncio.timeout(30):
        while len(out) < count:
            out.extend(await subscription.fetch(count - len(out)))
    return out


def batch(channel: str, start: int, count: int) -> list[RawRecord]:
    return [RawRecord(channel, "k", {}, f"{i}".encode()) for i in range(start, start + count)]


async def test_lag_counts_rows_behind_redeliveries_and_acked_above(driver: SqlDriver) -> None:
    tag = uuid.uuid4().hex[:10]
    channel, group = f"lag-{tag}", f"lag-grp-{tag}"
    spec = SubscriptionSpec(group=group, channels=(channel,))
    await driver.provision([channel])
    member = await driver.subscribe(spec)
    assert await member.lag() == {channel: 0}

    await driver.publish(batch(channel, 0, 10))
    first = await take(member, 10)
    assert await member.lag() == {channel: 10}  # fetched, not settled: still behind
    first[0].nack(300)  # back to the group in 5 minutes: not settled
    for delivery in first[1:]:
        delivery.ack()
    await member.settle(first)
    assert await member.lag() == {channel: 1}

    await driver.publish(batch(channel, 10, 5))
    second = await take(member, 5)
    for delivery in second[1:]:
        delivery.ack()  # above the unsettled second[0]: the position cannot move
    await member.settle(second[1:])
    assert await member.lag() == {channel: 6}
    await member.close()  # lets go: writes the 4 acked above the position to hexa_acked

    again = await driver.subscribe(spec)
    try:
        assert await again.lag() == {channel: 2}  # second[0] and the delayed first[0]
    finally:
        await again.close()
