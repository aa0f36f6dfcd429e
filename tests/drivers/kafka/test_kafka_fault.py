"""Fault test: 10,000 events emitted and consumed while Kafka restarts twice (data kept).

Every event is handled; none is lost; redeliveries carry the HEXA_EVENT_ID of the original,
so they are recognisable as duplicates.
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

from hexa_event.context import Context
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.emitter import Emitter
from hexa_event.errors import DriverError
from hexa_event.event import Event, Message
from hexa_event.receiver import Receiver
from hexa_event_services import get_service, require_service

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
log = logging.getLogger(__name__)

TOTAL = int(os.environ.get("HEXA_FAULT_EVENTS", "10000"))
BATCH = 100
MAX_LAG = 1000


async def test_ten_thousand_events_survive_two_broker_restarts(kafka_bootstrap: str) -> None:
    service = require_service("kafka")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"fault-{tag}", f"fault-act-{tag}"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3, delivery_timeout=60)
    receiver_driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    handled: Counter[str] = Counter()
    ids_seen_in_ctx: set[str] = set()
    receiver = Receiver(receiver_driver, name="fault", drain_timeout=10)

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        handled[msg.id] += 1
        ids_seen_in_ctx.add(ctx.event_id)

    events = [Event(channel, f"k{i % 97}", {"i": i}, id=f"{tag}-{i}") for i in range(TOTAL)]
    emitted: list[str] = []
    emit_retries = 0
    timeline: list[str] = []

    async def emit_all() -> None:
        nonlocal emit_retries
        emitter = Emitter(driver)
        for start in range(0, TOTAL, BATCH):
            batch = events[start : start + BATCH]
            deadline = time.monotonic() + 180
            # Keep emit and consume in step, so both are in flight during the restarts.
            while len(handled) < len(emitted) - MAX_LAG:
                assert time.monotonic() < deadline, "consumer stopped making progress"
                await asyncio.sleep(0.01)
            while True:
                try:
                    emitted.extend(await emitter.emit_many(batch))
                    break
                except DriverError as exc:
                    # Re-emitting keeps the ids: the receiver recognises the duplicates.
                    emit_retries += 1
                    log.warning("emit failed during restart, retrying batch: %s", exc)
                    assert time.monotonic() < deadline, "broker did not come back"
                    await asyncio.sleep(0.5)

    async def restart_when(count: int) -> float:
        deadline = time.monotonic() + 120
        while len(handled) < count:
            assert time.monotonic() < deadline, f"stuck at {len(handled)} handled"
            await asyncio.sleep(0.05)
        began = time.monotonic()
        at_emitted = len(emitted)
        await asyncio.to_thread(get_service("kafka").restart, True)
        timeline.append(f"restart at {at_emitted} emitted / {count} handled")
        return time.monotonic() - began

    await driver.provision([channel])
    async with receiver:
        emitting = asyncio.create_task(emit_all())
        downtime = [await restart_when(TOTAL // 5), await restart_when(TOTAL * 3 // 5)]
        await asyncio.wait_for(emitting, 240)
        deadline = time.monotonic() + 180
        while len(handled) < TOTAL:
            assert time.monotonic() < deadline, f"only {len(handled)} of {TOTAL} handled"
            await asyncio.sleep(0.1)
    await driver.close()
    await receiver_driver.close()

    expected = {e.id for e in events}
    assert set(handled) == expected, f"lost: {len(expected - set(handled))}"
    assert ids_seen_in_ctx == expected  # HEXA_EVENT_ID in the context is the producer's id
    duplicates = sum(n - 1 for n in handled.values())
    print(
        f"\nfault test: {TOTAL} events, 2 restarts ({downtime[0]:.1f}s, {downtime[1]:.1f}s), "
        f"handled all, {duplicates} redeliveries (same HEXA_EVENT_ID), "
        f"{emit_retries} emit batches retried; {'; '.join(timeline)}"
    )
    assert all(int(t.split()[2]) < TOTAL for t in timeline), "emitting had ended: no fault"
    assert service.is_ready(timeout=5)
