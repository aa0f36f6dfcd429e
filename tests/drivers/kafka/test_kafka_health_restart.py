"""Issue 23 #4: after a broker restart, Kafka health clears the outage's error once the
cluster answers again, also for a group that receives nothing (the retry group), instead of
reporting "Connection refused" until records happen to arrive. Restarts the shared broker
once, so it is marked like the other Kafka fault tests (run on their own, in sequence)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import hexa_event as he
from fault_helpers import stacks_after, stacks_before_timeout
from hexa_event.testing import Collector
from hexa_event_services import get_service, require_service

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.disruptive]


@pytest.fixture(autouse=True)
def _stacks_if_hung(request: pytest.FixtureRequest) -> Iterator[None]:
    """A hang (a consumer or close blocked in librdkafka) leaves every thread's stack."""
    with stacks_after(stacks_before_timeout(request.config, request.node)):
        yield


RECOVERED_WITHIN = 30.0
"""Seconds after the broker is back by which health must be clean again (main: 61 s+)."""


async def test_health_recovers_after_a_broker_restart(kafka_bootstrap: str) -> None:
    service = require_service("kafka")
    tag = uuid.uuid4().hex[:8]
    channel, action = f"health-{tag}", f"health-act-{tag}"
    conn = he.connect(f"kafka://{kafka_bootstrap}")
    await conn.provision([channel])
    got = Collector()
    receiver = conn.receiver("health")

    @receiver.subscribe(channel, action=action)
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        got.add(msg.payload["n"])

    emitter = conn.emitter()
    seen: list[str] = []
    async with receiver:
        await emitter.emit_many([he.Event(channel, f"k{n}", {"n": n}) for n in range(6)])
        await got.wait_for(6, within=60)
        assert receiver.health()["healthy"], receiver.health()

        watching = True

        async def watch() -> None:
            while watching:
                health = receiver.health()
                if not health["healthy"]:
                    seen.append(health["reason"])
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.to_thread(get_service("kafka").restart, True)
            back_at = time.monotonic()
            await emitter.emit_many([he.Event(channel, f"k{n}", {"n": n}) for n in range(6, 12)])
            await got.wait_for(12, within=120)
            # The outage was seen (else this test would show nothing)...
            await _wait(lambda: bool(seen), 30, "health never reported the outage")
            # ...and is cleared once the broker answers, the idle retry group included.
            await _wait(
                lambda: receiver.health()["healthy"],
                RECOVERED_WITHIN,
                lambda: f"still unhealthy: {receiver.health()['reason']}",
            )
            print(f"health clean {time.monotonic() - back_at:.1f}s after the restart")
        finally:
            watching = False
            await watcher
    await conn.close()
    assert any(
        "refused" in r.lower()
        or "down" in r.lower()
        or "transport" in r.lower()
        or "broker" in r.lower()
        for r in seen
    ), seen
    assert service.is_ready(timeout=5)


async def _wait(check: Any, within: float, why: Any) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(why() if callable(why) else why)
        await asyncio.sleep(0.2)
