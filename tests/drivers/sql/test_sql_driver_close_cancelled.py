"""A driver's close whose caller is cancelled (a timeout around a service's shutdown) still
closes every subscription and the engine; a second close waits for it. Before, it stopped
at the subscription it was closing and a second close returned at once: the other
subscriptions stayed members of their groups (holding partitions, their fetch waiting for
ever) and the engine's connections stayed open. The close sequence is every driver's
(KitDriver); SQLite shows it without a broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import hexa_event
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver


async def test_a_cancelled_close_still_closes_everything(tmp_path: Path) -> None:
    driver = hexa_event.connect(f"sqlite:///{tmp_path / 'events.db'}").driver
    assert isinstance(driver, SqlDriver)
    await driver.provision(["a", "b"])
    first = await driver.subscribe(SubscriptionSpec(group="ga", channels=("a",)))
    second = await driver.subscribe(SubscriptionSpec(group="gb", channels=("b",)))
    closing = asyncio.create_task(driver.close())
    await asyncio.sleep(0)  # under way: closing the first subscription
    closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)
    async with asyncio.timeout(30):
        await driver.close()  # waits for the first close to end
    for subscription in (first, second):
        async with asyncio.timeout(5):
            assert await subscription.fetch(1) == [], f"{subscription!r} is still open"
    pool = driver.engine.pool
    assert (pool.checkedout(), pool.checkedin()) == (0, 0), "the engine was not disposed"
