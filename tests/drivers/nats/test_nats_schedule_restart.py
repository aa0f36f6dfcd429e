"""Fault test: scheduled events survive a restart of nats-server (store kept).

JetStream holds an event with a due time as a scheduled message in the stream; the server
publishes it to its subject when due. Events scheduled a few seconds ahead are emitted, the
server is stopped and started again while they wait, and then every one is handled once,
none before its time. This test stops and starts the shared server: run it alone
(``pytest -m "nats and slow" tests/drivers/nats``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS

from hexa_event.connect import wrap
from hexa_event.context import Context
from hexa_event.drivers.nats import NatsDriver
from hexa_event.event import Event, Message
from hexa_event.testing import Collector
from hexa_event_services import require_service

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.disruptive]

DELAY = 20.0
"""Far enough ahead that the server restart (a few seconds) ends before they are due."""


async def test_scheduled_events_survive_a_server_restart(nats_server: str) -> None:
    service = require_service("nats")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"sched-fault-{tag}", f"sched-fault-act-{tag}"
    emitting = wrap(NatsDriver.from_url(nats_server, **TEST_OPTIONS))
    await emitting.provision([channel])
    events = [Event(channel, f"k{i % 5}", {"i": i}, delay=DELAY) for i in range(20)]
    emitted_at = time.time()
    ids = await emitting.emitter().emit_many(events)
    await emitting.close()

    await asyncio.to_thread(service.restart, True)

    receiving = wrap(NatsDriver.from_url(nats_server, **TEST_OPTIONS))
    handled: dict[str, float] = {}
    counts: dict[str, int] = {}
    seen = Collector()
    receiver = receiving.receiver("sched-fault")

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        handled.setdefault(msg.id, time.time())
        counts[msg.id] = counts.get(msg.id, 0) + 1
        seen.add(msg.id)

    async with receiver:
        await seen.wait_for(len(ids), within=DELAY + 60)
    await receiving.close()

    assert set(handled) == set(ids), "a scheduled event was lost in the restart"
    assert all(n == 1 for n in counts.values()), f"handled more than once: {counts}"
    earliest = min(handled.values())
    # The due time is stamped when emitted; allow for clock rounding only.
    assert earliest >= emitted_at + DELAY - 0.5, (
        f"handled {earliest - emitted_at:.1f}s after the emit, due after {DELAY}s"
    )
    first, last = min(handled.values()) - emitted_at, max(handled.values()) - emitted_at
    print(f"\nhandled {first:.1f}-{last:.1f}s after the emit")
    assert service.is_ready(timeout=5)
