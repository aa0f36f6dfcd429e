"""Several callers on one relay, and ``close()`` under them: ``run_once()`` or ``drain()``
at once (or beside ``run()``) keep a key's rows in order; ``close()`` under a running
``drain()`` waits for its batch (a bounded wait) and stops it."""

from __future__ import annotations

import asyncio

import pytest

from db_helpers import RecordingDriver, outbox_emit, rows
from hexa_event import Event
from hexa_event.errors import ClosedError
from hexa_event.outbox import OutboxRelay
from hexa_event.testing import eventually


def emit(url: str, keys: list[str]) -> list[str]:
    return outbox_emit(url, [Event("orders", key, {"n": n}) for n, key in enumerate(keys)])


async def test_run_once_calls_at_once_keep_a_keys_order(db_url: str) -> None:
    """Two ``run_once()`` at once (or a ``drain()`` beside ``run()``): both read "no batch
    before mine" before either claim came back, the second claim took the key's later rows
    (the relay's own leases, or locks, do not hold it back) and published them while the
    first batch, the key's earlier rows, was still publishing."""
    ids = emit(db_url, ["k"] * 10)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()
    async with OutboxRelay(db_url, driver, batch_size=5, concurrency=1) as relay:
        first = asyncio.create_task(relay.run_once())
        second = asyncio.create_task(relay.run_once())
        await eventually(lambda: relay.in_flight == 10, what="both batches claimed")
        await asyncio.wait({second}, timeout=0.3)  # time to publish, if it would
        assert driver.in_publish == 1, "the key's later rows went out beside its earlier ones"
        driver.gate.set()
        assert await asyncio.wait_for(asyncio.gather(first, second), 30) == [5, 5]
    assert driver.max_in_publish == 1
    assert driver.ids() == ids


async def test_close_stops_a_drain_and_waits_for_its_batch(db_url: str) -> None:
    """``close()`` returned at once under a running ``drain()`` (it waited for ``run()``
    only) and disposed of the engine while the drain went on relaying."""
    ids = emit(db_url, [f"k{n}" for n in range(10)])
    driver = RecordingDriver()
    driver.gate = asyncio.Event()
    relay = OutboxRelay(db_url, driver, batch_size=5, concurrency=1)
    draining = asyncio.create_task(relay.drain(max_seconds=60))
    await eventually(lambda: driver.in_publish == 1, what="publishing")
    closing = asyncio.create_task(relay.close())
    _, pending = await asyncio.wait({closing}, timeout=0.2)
    assert pending, "close() returned while drain() was publishing"
    driver.gate.set()
    await asyncio.wait_for(closing, 30)
    assert draining.done()
    assert await draining == 5  # the batch in flight settled; no batch after close()
    assert driver.ids() == ids[:5]
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(5,)]
    assert relay.engine.pool.checkedin() == 0
    for again in (relay.drain, relay.run_once):
        with pytest.raises(ClosedError, match="closed"):
            await again()
    await asyncio.wait_for(relay.run(), 5)  # stopped for good: returns at once
    assert driver.ids() == ids[:5]


async def test_close_cuts_a_hanging_drain_short_after_the_lease(db_url: str) -> None:
    emit(db_url, ["a", "b"])
    driver = RecordingDriver()
    driver.gate = asyncio.Event()  # never set: the broker stopped answering
    relay = OutboxRelay(db_url, driver, lease=0.5)
    draining = asyncio.create_task(relay.drain(max_seconds=60))
    await eventually(lambda: driver.in_publish == 1, what="publishing")
    await asyncio.wait_for(relay.close(), 30)
    assert await asyncio.wait_for(draining, 5) == 0  # cut short, not the caller cancelled
    assert driver.records == []
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(2,)]  # sent again later
