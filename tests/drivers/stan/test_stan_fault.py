"""Fault test: the shared STAN server restarts (keeping its FILE store) while events flow.

It restarts the shared server, so run it alone:
``.venv/bin/pytest -m "stan and slow" tests/drivers/stan/test_stan_fault.py``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import pytest
from stan_helpers import shared_url, unique

import hexa_event
from hexa_event.context import Context
from hexa_event.driver import RawRecord
from hexa_event.errors import DriverError
from hexa_event.event import Event, Message
from hexa_event.testing.waiting import eventually
from hexa_event_services import get_service, require_service

pytestmark = [pytest.mark.stan, pytest.mark.slow, pytest.mark.disruptive]

COUNT = 10_000
BATCH = 100
logger = logging.getLogger(__name__)


@pytest.mark.timeout(1200)
async def test_restart_while_10000_events_flow_loses_none() -> None:
    service = require_service("stan")
    # A server recovering a store of thousands of channels (a long-lived shared one) takes a
    # minute or more to serve again: emit waits for it.
    url = shared_url(ack_wait=5, ack_timeout=600)
    channel, action = unique("fault"), unique("act")
    emitting = hexa_event.connect(url)
    receiving = hexa_event.connect(url)
    seen: collections.Counter[str] = collections.Counter()

    async def handle(ctx: Context, msg: Message[Any]) -> None:
        seen[msg.id] += 1

    receiver = receiving.receiver("svc")
    receiver.subscribe(channel, action=action, handler=handle)
    await receiver.start()
    sealer = emitting.emitter()
    records: list[RawRecord] = [
        sealer.seal(Event(channel, f"k{i % 50}", {"i": i})) for i in range(COUNT)
    ]
    ids = {r.headers["HEXA_EVENT_ID"].decode() for r in records}
    assert len(ids) == COUNT
    resent = 0

    async def emit_all() -> None:
        nonlocal resent
        for start in range(0, COUNT, BATCH):
            batch = records[start : start + BATCH]
            while True:
                try:
                    await emitting.publish(batch)
                    break
                except DriverError as exc:  # the same records (same event ids) again
                    resent += 1
                    logger.info("batch at %d re-sent after %s", start, exc)
            await asyncio.sleep(0.03)  # spread the flow over seconds, across the restart

    flow_began = time.monotonic()
    emitter_task = asyncio.create_task(emit_all())
    try:
        await eventually(lambda: len(seen) >= COUNT // 4, within=120, what="a quarter")
        assert not emitter_task.done()  # the restart happens mid-flow
        began = time.monotonic()
        await asyncio.to_thread(get_service("stan").restart, True, 600)
        restart_took = time.monotonic() - began
        await asyncio.wait_for(emitter_task, 700)
        await eventually(lambda: set(seen) >= ids, within=300, what="every event")
        flow_took = time.monotonic() - flow_began
    finally:
        emitter_task.cancel()
        await receiver.close()
        await emitting.close()
        await receiving.close()
    assert set(seen) == ids
    duplicates = sum(seen.values()) - COUNT
    print(
        f"restart took {restart_took:.1f}s, the whole flow {flow_took:.1f}s; {COUNT} events, "
        "none lost; "
        f"{duplicates} redeliveries recognised by HEXA_EVENT_ID; {resent} batches re-sent"
    )
    assert service.is_ready()
    assert resent == 0  # publish itself re-sent what the restart cut off
