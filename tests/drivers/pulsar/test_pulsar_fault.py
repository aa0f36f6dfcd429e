"""Fault test: 10,000 events emitted and consumed while Pulsar restarts twice (data kept).

Every event is handled by a receiver; none is lost; redeliveries carry the HEXA_EVENT_ID of
the original, so they are recognisable as duplicates. While the broker is down the receiver's
``health()`` names the problem, and it resumes on its own afterwards.
Run it alone (it restarts the shared broker): ``pytest -m slow tests/drivers/pulsar``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from typing import Any

import pytest

import hexa_event
from hexa_event.context import Context
from hexa_event.errors import DriverError
from hexa_event.event import Event, Message
from hexa_event_services import env, get_service, require_service

pytestmark = [pytest.mark.pulsar, pytest.mark.slow]
log = logging.getLogger(__name__)

TOTAL = int(os.environ.get("HEXA_FAULT_EVENTS", "10000"))
BATCH = 100
MAX_LAG = 1000


async def test_ten_thousand_events_survive_two_broker_restarts() -> None:
    service = require_service("pulsar")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"fault-{tag}", f"fault-act-{tag}"
    options = {"admin_url": env("HEXA_PULSAR_ADMIN_URL"), "send_timeout": 20.0}
    emitting_side = hexa_event.connect(env("HEXA_PULSAR_URL"), **options)
    consuming_side = hexa_event.connect(env("HEXA_PULSAR_URL"), **options)
    handled: Counter[str] = Counter()
    health: list[str] = []
    events = [Event(channel, f"k{i % 97}", {"i": i}, id=f"{tag}-{i}") for i in range(TOTAL)]
    emitted: list[str] = []
    emit_retries = 0
    timeline: list[str] = []

    receiver = consuming_side.receiver("fault", drain_timeout=10)
    contexts: set[str] = set()

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        handled[msg.id] += 1
        contexts.add(ctx.event_id)

    async def watch_health() -> None:
        while True:
            report = receiver.health()
            if not report["healthy"] and report.get("reason"):
                reason = str(report["reason"]).split(" for ")[0]
                if not health or health[-1] != reason:
                    health.append(reason)
            await asyncio.sleep(0.2)

    async def emit_all() -> None:
        nonlocal emit_retries
        emitter = emitting_side.emitter()
        for start in range(0, TOTAL, BATCH):
            batch = events[start : start + BATCH]
            deadline = time.monotonic() + 240
            # Keep emit and consume in step, so both are in flight during the restarts.
            while len(handled) < len(emitted) - MAX_LAG:
                assert time.monotonic() < deadline, "consumer stopped making progress"
                await asyncio.sleep(0.01)
            while True:
                try:
                    emitted.extend(await emitter.emit_many(batch))
                    break
                except DriverError as exc:
                    # Re-emitting keeps the ids: the consumer recognises the duplicates.
                    emit_retries += 1
                    log.warning("emit failed during restart, retrying batch: %s", exc)
                    assert time.monotonic() < deadline, "broker did not come back"
                    await asyncio.sleep(0.5)

    async def restart_when(count: int) -> float:
        deadline = time.monotonic() + 180
        while len(handled) < count:
            assert time.monotonic() < deadline, f"stuck at {len(handled)} handled"
            await asyncio.sleep(0.05)
        began = time.monotonic()
        at_emitted = len(emitted)
        await asyncio.to_thread(get_service("pulsar").restart, True)
        timeline.append(f"restart at {at_emitted} emitted / {count} handled")
        return time.monotonic() - began

    await emitting_side.provision([channel])
    watching = asyncio.create_task(watch_health())
    try:
        async with receiver:
            emitting = asyncio.create_task(emit_all())
            downtime = [await restart_when(TOTAL // 5), await restart_when(TOTAL * 3 // 5)]
            await asyncio.wait_for(emitting, 300)
            deadline = time.monotonic() + 300
            while len(handled) < TOTAL:
                assert time.monotonic() < deadline, f"only {len(handled)} of {TOTAL} handled"
                await asyncio.sleep(0.1)
    finally:
        watching.cancel()
        await emitting_side.close()
        await consuming_side.close()

    expected = {e.id for e in events}
    assert set(handled) == expected, f"lost: {len(expected - set(handled))}"
    assert contexts == expected  # HEXA_EVENT_ID in the context is the producer's id
    duplicates = sum(n - 1 for n in handled.values())
    print(
        f"\nfault test: {TOTAL} events, 2 restarts ({downtime[0]:.1f}s, {downtime[1]:.1f}s), "
        f"handled all, {duplicates} redeliveries (same HEXA_EVENT_ID), "
        f"{emit_retries} emit batches retried; {'; '.join(timeline)}; health: {health}"
    )
    assert all(int(t.split()[2]) < TOTAL for t in timeline), "emitting had ended: no fault"
    assert any("disconnected" in h for h in health), "the outage never showed in health()"
    assert service.is_ready(timeout=5)
