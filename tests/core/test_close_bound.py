"""Issue 20 #8: close() with a blocked sync handler returns after drain_timeout, and the
abandoned event is given back (delivered again), never acked."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import hexa_event as he
from hexa_event.drivers.memory.broker import MemoryBroker
from hexa_event.testing import Collector


async def test_close_returns_after_drain_timeout_with_a_blocked_sync_handler() -> None:
    name = f"close-bound-{uuid.uuid4().hex}"
    release = threading.Event()
    started = threading.Event()
    try:
        conn = he.connect(f"memory://{name}")
        receiver = conn.receiver("svc", drain_timeout=2)

        @receiver.subscribe("orders", action="a")
        def blocked(ctx: he.Context, msg: he.Message[Any]) -> None:
            started.set()
            release.wait(60)

        await receiver.start()
        await conn.emitter().emit(he.Event("orders", "k", {"n": 1}))
        await asyncio.to_thread(started.wait, 10)
        assert started.is_set()

        began = time.monotonic()
        await receiver.close()
        took = time.monotonic() - began
        assert 1.9 <= took < 3.0, f"close() took {took:.2f}s with drain_timeout=2"

        # The abandoned delivery was given back: the next member of the action gets it.
        again = Collector()
        successor = conn.receiver("svc")
        successor.subscribe("orders", action="a", handler=again.add_message)
        async with successor:
            await again.wait_for(1, within=10)
        assert [m.payload for m in again.items] == [{"n": 1}]
        assert again.items[0].attempt == 1
        await conn.close()
    finally:
        release.set()
        MemoryBroker.forget(name)
