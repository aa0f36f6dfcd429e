"""``SqlSubscription.caught_up()``: True only once every partition is read to the log's end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import hexa_event as he
from hexa_event.driver import SubscriptionSpec
from hexa_event.testing import eventually


async def test_caught_up_follows_the_end_of_the_log(tmp_path: Path) -> None:
    conn = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    emitter = conn.emitter()
    await emitter.emit_many([he.Event("orders", f"k{n}", {"n": n}) for n in range(3)])
    sub = await conn.subscribe(SubscriptionSpec(group="g", channels=("orders",), prefetch=100))
    try:
        assert sub.caught_up() is False  # nothing read yet
        got = list(await sub.fetch(100))
        while len(got) < 3:
            got += await sub.fetch(100)
        pending = asyncio.ensure_future(sub.fetch(100))  # waits for more: reads to the end
        await eventually(lambda: sub.caught_up() is True, within=10, what="caught up")

        await emitter.emit(he.Event("orders", "k9", {"n": 9}))
        more = await asyncio.wait_for(pending, 10)
        assert [d.record.key for d in more] == ["k9"]
    finally:
        await sub.close()
        await conn.close()


async def test_pattern_subscriptions_cannot_tell(tmp_path: Path) -> None:
    conn = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    sub = await conn.subscribe(SubscriptionSpec(group="g", channels=(), pattern="ord.*"))
    try:
        assert sub.caught_up() is None
    finally:
        await sub.close()
        await conn.close()
