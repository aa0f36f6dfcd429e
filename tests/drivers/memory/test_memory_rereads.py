"""A group whose members leave without settling reads the same records again, from every
partition, however often that happens (``hexa-event dlq list`` does exactly this)."""

from __future__ import annotations

import asyncio

import hexa_event as he
from hexa_event.driver import SubscriptionSpec


async def test_records_read_again_and_again_come_from_every_partition() -> None:
    conn = he.connect("memory://")
    await conn.emitter().emit_many(he.Event("c", f"k{i}", {"i": i}) for i in range(40))
    first: set[str] = set()
    for attempt in range(1, 8):
        sub = await conn.driver.subscribe(SubscriptionSpec(group="g", channels=("c",)))
        got: dict[str, int] = {}
        while len(got) < 40:
            batch = await asyncio.wait_for(sub.fetch(500), timeout=5)
            got.update((d.coordinates, d.delivery_count) for d in batch)
        await sub.close()  # nothing settled: the next member starts from the same place
        first = first or set(got)
        assert set(got) == first, f"read {attempt} differs"
        assert set(got.values()) == {attempt}, f"read {attempt}: counts {set(got.values())}"
    assert len({c.rsplit("-", 1)[0] for c in first}) > 1  # the keys spread over partitions
    await conn.close()
