"""Issue 20 #2: ``memory://`` is private to each connect; a named bus is shared."""

from __future__ import annotations

import uuid
from typing import Any

import hexa_event as he
from hexa_event.drivers.memory.broker import MemoryBroker
from hexa_event.testing import Collector, eventually


async def _first_payloads(conn: he.Connection, emit: dict[str, Any]) -> list[Any]:
    """Subscribe a new action reading from the earliest event, emit ``emit`` with key k and
    return what was handled up to and including it (same key: one partition, in order)."""
    got = Collector()
    receiver = conn.receiver("svc")
    receiver.subscribe("orders", action="a", handler=got.add_message)
    async with receiver:
        await conn.emitter().emit(he.Event("orders", "k", emit))
        await eventually(lambda: any(m.payload == emit for m in got.items), within=10)
    return [m.payload for m in got.items]


async def test_an_unnamed_bus_does_not_leak_into_the_next_connect() -> None:
    first = he.connect("memory://")
    await first.emitter().emit(he.Event("orders", "k", {"from": "earlier test"}))
    await first.close()

    second = he.connect("memory://")
    assert await _first_payloads(second, {"from": "this test"}) == [{"from": "this test"}]
    await second.close()


async def test_a_named_bus_is_shared_under_both_spellings() -> None:
    name = f"shared-{uuid.uuid4().hex}"
    try:
        first = he.connect(f"memory://{name}")
        await first.emitter().emit(he.Event("orders", "k", {"n": 1}))
        await first.close()

        second = he.connect(f"memory:///{name}")
        assert await _first_payloads(second, {"n": 2}) == [{"n": 1}, {"n": 2}]
        await second.close()
    finally:
        MemoryBroker.forget(name)
