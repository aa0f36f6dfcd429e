"""Dead-letter replay: back to the source channel, once, with the event id kept."""

from __future__ import annotations

import uuid
from typing import Any

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.replay import replay_dead_letters
from hexa_event.testing import Collector, eventually


async def test_replay_moves_dead_letters_back_once_keeping_the_event_id() -> None:
    driver = he.connect(f"memory://{uuid.uuid4().hex}")
    broken = True
    handled = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("orders", action="export", retry=he.RetryPolicy(max_retries=0))
    async def export(ctx: he.Context, msg: he.Message[Any]) -> None:
        if broken:
            raise RuntimeError("warehouse down")
        handled.add((msg.id, msg.attempt, dict(msg.headers)))

    async with receiver:
        event_id = await driver.emitter().emit(he.Event("orders", "k", {"n": 1}))
        info = receiver.subscriptions["export"]
        await eventually(lambda: info.counters.dead_lettered == 1, within=5, what="dead letter")
        broken = False  # the operator fixed the warehouse
        report = await replay_dead_letters(driver, "export", idle_timeout=0.2)
        assert report.replayed == 1
        assert report.by_channel == {"orders": 1}
        [(replayed_id, attempt, headers)] = await handled.wait_for(1, within=5)
    assert replayed_id == event_id
    assert attempt == 1
    assert env.DEAD_LETTER_REASON not in headers
    assert env.ERROR_TYPE not in headers
    assert headers["HEXA_REPLAYED_FROM"].startswith(b"export.dlq-")
    assert (await replay_dead_letters(driver, "export", idle_timeout=0.05)).replayed == 0
