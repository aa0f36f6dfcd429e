"""The runner unfreezes the heap also when its run is cancelled while it closes."""

from __future__ import annotations

import asyncio
import gc

import pytest

import hexa_event as he
from hexa_event.runner import Service


async def test_a_run_cancelled_while_closing_still_unfreezes_the_heap() -> None:
    conn = he.connect("memory://gc-cancelled")
    running, release = asyncio.Event(), asyncio.Event()

    async def slow(_ctx: he.Context, _msg: he.Message[object]) -> None:
        running.set()
        await release.wait()  # holds the drain, so the close is under way when cancelled

    receiver = conn.receiver("svc", drain_timeout=30)
    receiver.subscribe("orders", action="slow", handler=slow)
    service = Service(receiver)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(20):
            while not service.started:  # noqa: ASYNC110 (no event tells it started)
                await asyncio.sleep(0.01)
            await conn.emitter().emit(he.Event(channel="orders", key="k", payload={}))
            await running.wait()
            assert gc.get_freeze_count() > 0  # tuned while serving
            service.stop()  # the close now waits for the handler (drain_timeout)
            while not receiver._closing.is_set():  # noqa: ASYNC110 (the close is under way)
                await asyncio.sleep(0.01)
        task.cancel()  # e.g. an embedding app's shutdown, or a wait_for timing out
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gc.get_freeze_count() == 0
    finally:
        release.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await receiver.close()
