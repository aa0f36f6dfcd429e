"""Fault test: 10,000 events emitted and consumed while Pulsar restarts twice (data kept).

Every event is handled by a receiver; none is lost; redeliveries carry the HEXA_EVENT_ID of
the original, so they are recognisable as duplicates. While the broker is down the receiver's
``health()`` names the problem, and it resumes on its own afterwards.
Run it alone (it restarts the shared broker): ``pytest -m slow tests/drivers/pulsar``.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

import hexa_event
from fault_helpers import FaultFlow
from hexa_event_services import env, get_service, require_service

pytestmark = [pytest.mark.pulsar, pytest.mark.slow, pytest.mark.disruptive]


async def test_ten_thousand_events_survive_two_broker_restarts() -> None:
    service = require_service("pulsar")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"fault-{tag}", f"fault-act-{tag}"
    options = {"admin_url": env("HEXA_PULSAR_ADMIN_URL"), "send_timeout": 20.0}
    emitting_side = hexa_event.connect(env("HEXA_PULSAR_URL"), **options)
    consuming_side = hexa_event.connect(env("HEXA_PULSAR_URL"), **options)
    flow = FaultFlow(channel, tag, patience=240)
    health: list[str] = []
    receiver = consuming_side.receiver("fault", drain_timeout=10)
    receiver.subscribe(channel, action=action, handler=flow.handle)

    async def watch_health() -> None:
        while True:
            report = receiver.health()
            if not report["healthy"] and report.get("reason"):
                reason = str(report["reason"]).split(" for ")[0]
                if not health or health[-1] != reason:
                    health.append(reason)
            await asyncio.sleep(0.2)

    async def restart() -> None:
        await asyncio.to_thread(get_service("pulsar").restart, True)

    await emitting_side.provision([channel])
    watching = asyncio.create_task(watch_health())
    try:
        async with receiver:
            emitting = asyncio.create_task(flow.emit_all(emitting_side.emitter()))
            downtime = [
                await flow.fault_at(flow.total // 5, "restart", restart, within=180),
                await flow.fault_at(flow.total * 3 // 5, "restart", restart, within=180),
            ]
            await asyncio.wait_for(emitting, 300)
            await flow.wait_handled(flow.total, within=300)
    finally:
        watching.cancel()
        await emitting_side.close()
        await consuming_side.close()

    flow.verify()
    print(f"{flow.summary(downtime)}; health: {health}")
    assert any("disconnected" in h for h in health), "the outage never showed in health()"
    assert service.is_ready(timeout=5)
