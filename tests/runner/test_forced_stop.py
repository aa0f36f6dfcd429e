"""A second stop cuts short a relay that cannot finish its batch (a publish that hangs), and
a run cancelled while its loops stop is cancelled, not swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.driver import RawRecord
from hexa_event.outbox import Outbox, OutboxRelay, migrate_async
from hexa_event.runner import Service


class Hanging(he.Connection):
    """A persistent driver whose publish never returns (a broker that stopped answering)."""

    def __init__(self, driver: he.Connection) -> None:
        super().__init__(driver)
        self.publishing = asyncio.Event()

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.publishing.set()
        await asyncio.Event().wait()


@pytest.mark.parametrize("pipeline", [1, 3])
async def test_a_second_stop_cuts_a_hanging_relay_short(tmp_path: Path, pipeline: int) -> None:
    log = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    target = Hanging(log)
    db = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    relay = OutboxRelay(db, target, poll_interval=0.05, pipeline=pipeline, lease=60)
    await migrate_async(relay.engine)
    async with relay.engine.begin() as conn:
        for n in range(3):
            await Outbox().emit_async(conn, he.Event(channel="orders", key=f"k{n}", payload={}))
    service = Service([relay, log])
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(target.publishing.wait(), 20)
        service.stop()  # graceful: waits for the batch in hand, which never ends
        _, pending = await asyncio.wait({running}, timeout=0.5)
        assert pending, "the first stop did not wait for the batch in hand"
        service.stop()  # the second signal
        done, _ = await asyncio.wait({running}, timeout=10)
        assert done, "a second stop did not cut the hanging publish short"
        running.result()  # no failure: the process exits 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    stats = await relay.stats()
    assert stats.backlog == 3  # nothing marked sent: relayed again later
    assert relay.published == 0
    await relay.close()


class SlowToStop:
    """A loop that takes its time to stop (a relay finishing a long batch)."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.cancelled = False

    async def run(self) -> None:
        await self.stopping.wait()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def stop(self) -> None:
        self.stopping.set()


async def test_a_run_cancelled_while_its_loops_stop_is_cancelled() -> None:
    loop = SlowToStop()
    service = Service([loop])
    running: asyncio.Task[Any] = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(20):
            while not service.started:  # noqa: ASYNC110 (no event tells it started)
                await asyncio.sleep(0.01)
            (loop_task,) = service._loop_tasks
            service.stop()
            await loop.stopping.wait()  # the close stopped it and now waits for it
        running.cancel()  # e.g. an embedding app's shutdown, or a wait_for timing out
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(running, 10)
        await asyncio.wait({loop_task}, timeout=10)
        assert loop_task.cancelled()
        assert loop.cancelled
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
