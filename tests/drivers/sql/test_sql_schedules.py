"""Scheduled events on the SQL log survive the whole system going down: every process
closed after the consumer gave them back until due, then a new process handles them on
time (the log is the broker: its rows, and the redelivery rows, are what persists)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

import hexa_event as he
from hexa_event.testing.waiting import eventually


async def test_scheduled_events_survive_closing_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    channel, action = "reminders", f"remind-{uuid.uuid4().hex[:8]}"
    handled: dict[str, float] = {}

    def handler(ctx: he.Context, msg: he.Message[Any]) -> None:
        handled.setdefault(msg.id, time.time())

    first = he.connect(url)
    receiver = first.receiver("svc")
    receiver.subscribe(channel, action=action, handler=handler)
    async with receiver:
        sent = time.time()
        ids = await first.emitter().emit_many(
            he.Event(channel, f"k{i}", {"i": i}, delay=1.5) for i in range(10)
        )
        engine = create_engine(url)

        def given_back() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM hexa_redeliveries")).scalar())

        await eventually(lambda: given_back() == 10, within=10, what="the nacks written")
        engine.dispose()
    await first.close()
    assert handled == {}, "handled before due"

    second = he.connect(url)
    receiver = second.receiver("svc")
    receiver.subscribe(channel, action=action, handler=handler)
    async with receiver:
        await eventually(lambda: set(handled) == set(ids), within=10, what="every event")
    await second.close()
    assert min(handled.values()) >= sent + 1.5
