"""The server gone for a few seconds under a running receiver, on a nats-server of the
test's own (a free loopback port, its own store; the shared server is not touched).

Killed (SIGKILL: a crash) while records are in flight, and started again with its store
after some seconds: every event is handled, none lost; while it is down the receiver's
health names the problem, and it clears once the server is back. With partitions, no
key's later record runs before an earlier one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from nats_helpers import PARTITIONED_OPTIONS, TEST_OPTIONS
from own_server import OwnNatsServer

import hexa_event as he
from fault_helpers import FaultFlow
from hexa_event.drivers.nats import NatsSubscriptionOptions

pytestmark = pytest.mark.nats


@pytest.mark.parametrize("partitioned", [False, True], ids=["plain", "partitioned"])
async def test_a_server_gone_for_seconds_loses_nothing_and_health_says_why(
    own_nats: OwnNatsServer, partitioned: bool
) -> None:
    tag = uuid.uuid4().hex[:8]
    channel, action = f"own-{tag}", f"own-act-{tag}"
    options: dict[str, Any] = {**(PARTITIONED_OPTIONS if partitioned else TEST_OPTIONS)}
    emitting = he.connect(own_nats.url, publish_timeout=5, **options)
    receiving = he.connect(own_nats.url, reconnect_wait=0.2, **options)
    flow = FaultFlow(channel, tag, total=2000, max_lag=300, patience=120)
    order: dict[str, list[int]] = {}
    receiver = receiving.receiver(f"own-{tag}", drain_timeout=10)

    async def handle(ctx: Any, msg: he.Message[Any]) -> None:
        await asyncio.sleep(0.001)  # records are in flight when the server goes
        seen = order.setdefault(msg.key, [])
        if msg.id not in flow.handled:
            seen.append(int(msg.payload["i"]))
        await flow.handle(ctx, msg)

    receiver.subscribe(
        channel,
        action=action,
        handler=handle,
        options=NatsSubscriptionOptions(ack_wait=5, heartbeat=0.5),
    )
    problems_seen: list[str] = []

    def problems() -> list[str]:
        return list(receiver.health()["actions"].get(action, {}).get("problems", []))

    async def server_gone() -> None:
        own_nats.kill()
        down_until = time.monotonic() + 15
        while not any("NATS" in p for p in problems()):
            assert time.monotonic() < down_until, "health did not report the lost server"
            await asyncio.sleep(0.05)
        problems_seen.extend(problems())
        await asyncio.sleep(3)  # gone for a few seconds
        await own_nats.start()

    try:
        await emitting.provision([channel])
        async with receiver:
            emitter = asyncio.create_task(flow.emit_all(emitting.emitter()))
            downtime = [await flow.fault_at(flow.total // 3, "kill", server_gone)]
            await asyncio.wait_for(emitter, 180)
            await flow.wait_handled(flow.total, within=120)
            recovered_by = time.monotonic() + 30
            while problems():
                assert time.monotonic() < recovered_by, f"health still reports {problems()}"
                await asyncio.sleep(0.1)
    finally:
        await receiving.close()
        await emitting.close()
    flow.verify()
    if partitioned:
        overtaken = {k: s for k, s in order.items() if s != sorted(s)}
        assert not overtaken, f"a key's later record ran first: {overtaken}"
    print(f"{flow.summary(downtime)}; health while down: {problems_seen[0]!r}")
