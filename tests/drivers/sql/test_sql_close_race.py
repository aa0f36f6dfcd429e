"""A subscribe racing the driver's close: it gets ClosedError, and the group keeps no
partition leased by a member that is gone (they would wait for ``lease_ttl``)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

import hexa_event
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver
from hexa_event.errors import ClosedError


@pytest.mark.parametrize("delay_ms", range(0, 40, 2))
async def test_a_subscribe_racing_close_leaves_no_lease(tmp_path: Path, delay_ms: int) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    channel = f"ch-{uuid.uuid4().hex[:8]}"
    driver = hexa_event.connect(url, lease_ttl=60.0, heartbeat_interval=0.2).driver
    assert isinstance(driver, SqlDriver)
    await driver.create_channels([channel])
    spec = SubscriptionSpec(group="g", channels=(channel,))
    joining = asyncio.create_task(driver.subscribe(spec))
    await asyncio.sleep(delay_ms / 1000)
    raced = not joining.done()
    await driver.close()
    try:
        sub = await joining
    except ClosedError:
        sub = None
    else:
        await sub.close()
    async with driver.engine.connect() as conn:
        held = "SELECT count(*) FROM hexa_positions WHERE owner IS NOT NULL"
        leased = (await conn.execute(text(held))).scalar_one()
    await driver.engine.dispose()
    assert leased == 0, "partitions leased by a member of a closed driver"
    assert sub is None or not raced, "a subscribe that raced close returned a subscription"
