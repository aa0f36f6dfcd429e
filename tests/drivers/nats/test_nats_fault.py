"""Fault test: 10,000 events emitted and consumed while nats-server restarts twice (store kept):
once stopped gracefully, once killed (SIGKILL: a crash; the page cache keeps its data).

Every event is handled; none is lost; redeliveries carry the HEXA_EVENT_ID of the original,
so they are recognisable as duplicates; while the server is down the receiver's health
names the problem, and it clears once the server is back. This test stops and starts the
shared server: run it alone (``pytest -m "nats and slow" tests/drivers/nats``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS

from fault_helpers import FaultFlow
from hexa_event.connect import wrap
from hexa_event.context import Context
from hexa_event.drivers.nats import NatsDriver
from hexa_event.event import Message
from hexa_event_services import require_service

pytestmark = [pytest.mark.nats, pytest.mark.slow, pytest.mark.disruptive]


async def test_ten_thousand_events_survive_two_server_restarts(nats_server: str) -> None:
    service = require_service("nats")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"fault-{tag}", f"fault-act-{tag}"
    emitting_driver = wrap(NatsDriver.from_url(nats_server, publish_timeout=5, **TEST_OPTIONS))
    receiving_driver = wrap(NatsDriver.from_url(nats_server, **TEST_OPTIONS))
    flow = FaultFlow(channel, tag)
    receiver = receiving_driver.receiver("fault", drain_timeout=10)
    problems_seen: list[str] = []

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        await asyncio.sleep(0.002)  # a little work, so records are in flight at a restart
        await flow.handle(ctx, msg)

    def problems() -> list[str]:
        return list(receiver.health()["actions"][action].get("problems", []))

    def server_down(crash: bool) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            # Best effort: stop the server while the receiver holds emitted, unhandled events.
            for _ in range(2000):
                if len(flow.emitted) - len(flow.handled) >= 50:
                    break
                await asyncio.sleep(0.002)
            await asyncio.to_thread(service.kill if crash else service.stop)
            # While the server is down, the receiver's health says why.
            down_until = time.monotonic() + 15
            while not any("NATS" in p for p in problems()):
                assert time.monotonic() < down_until, "health did not report the lost server"
                await asyncio.sleep(0.05)
            problems_seen.extend(problems())
            await asyncio.to_thread(service.start, False)

        return fault

    await emitting_driver.provision([channel])
    async with receiver:
        emitting = asyncio.create_task(flow.emit_all(emitting_driver.emitter()))
        downtime = [
            await flow.fault_at(flow.total // 5, "stop", server_down(crash=False)),
            await flow.fault_at(flow.total * 3 // 5, "kill", server_down(crash=True)),
        ]
        await asyncio.wait_for(emitting, 240)
        await flow.wait_handled(flow.total, within=180)
        recovered_by = time.monotonic() + 30
        while problems():
            assert time.monotonic() < recovered_by, f"health still reports {problems()}"
            await asyncio.sleep(0.1)
    await emitting_driver.close()
    await receiving_driver.close()

    flow.verify()
    print(f"{flow.summary(downtime)}; health while down: {problems_seen[0]!r}")
    assert service.is_ready(timeout=5)
