"""Several callers on one relay: ``run_once()`` or ``drain()`` at once (or beside
``run()``) keep a key's rows in order."""

from __future__ import annotations

import asyncio

from sqlalchemy import create_engine

from db_helpers import RecordingDriver
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxRelay
from hexa_event.testing import eventually


def emit(url: str, keys: list[str]) -> list[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            return Outbox(notify=False).emit_many(
                conn, [Event("orders", key, {"n": n}) for n, key in enumerate(keys)]
            )
    finally:
        engine.dispose()


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
