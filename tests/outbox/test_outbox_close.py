"""``close()`` while ``run()`` has a batch in flight: it waits for the batch to settle (a
bounded wait), so nothing touches the database after ``close()`` returned."""

from __future__ import annotations

import asyncio

from db_helpers import RecordingDriver, outbox_emit, rows
from hexa_event import Event
from hexa_event.outbox import OutboxRelay
from hexa_event.testing import eventually


def emit(url: str, count: int) -> list[str]:
    return outbox_emit(url, [Event("orders", f"k{n}", {"n": n}) for n in range(count)])


async def test_close_waits_for_the_batch_in_flight(db_url: str) -> None:
    ids = emit(db_url, 3)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()
    relay = OutboxRelay(db_url, driver, poll_interval=0.05)
    running = asyncio.create_task(relay.run())
    await eventually(lambda: driver.in_publish == 1, what="publishing")
    closing = asyncio.create_task(relay.close())
    _, pending = await asyncio.wait({closing}, timeout=0.2)
    assert pending, "close() returned while a batch was publishing"
    driver.gate.set()
    await asyncio.wait_for(closing, 30)
    assert running.done()
    await running
    assert driver.ids() == ids
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]  # marked sent
    # Nothing opened a connection after close() disposed of the engine's pool.
    assert relay.engine.pool.checkedin() == 0
    assert relay.health()["state"] == "closed"


async def test_close_cuts_a_hanging_batch_short_after_the_lease(db_url: str) -> None:
    emit(db_url, 2)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()  # never set: the broker stopped answering
    relay = OutboxRelay(db_url, driver, poll_interval=0.05, lease=0.5)
    running = asyncio.create_task(relay.run())
    await eventually(lambda: driver.in_publish == 1, what="publishing")
    await asyncio.wait_for(relay.close(), 30)
    assert running.done()
    await running  # the batch was cut short, not the caller's task
    assert driver.records == []
    assert relay.engine.pool.checkedin() == 0
