"""The memory driver counts each delivery of a record to a group: 1 the first time, one more
for each nack and each re-read by a partition's next owner; records appended later start at
1 again, and a record's coordinates name its partition and offset."""

from __future__ import annotations

import asyncio

import hexa_event as he
from hexa_event.driver import SubscriptionSpec


async def fetch_all(sub: he.driver.Subscription, count: int) -> list[he.driver.Delivery]:
    got: list[he.driver.Delivery] = []
    while len(got) < count:
        got.extend(await asyncio.wait_for(sub.fetch(500), timeout=5))
    return got


async def test_counts_grow_with_nacks_and_rereads_and_start_at_one_for_new_records() -> None:
    conn = he.connect("memory://?partitions=1")
    emitter = conn.emitter()
    await emitter.emit_many(he.Event("c", "k", {"i": i}) for i in range(3))
    spec = SubscriptionSpec(group="g", channels=("c",))
    sub = await conn.driver.subscribe(spec)
    first = await fetch_all(sub, 3)
    assert [d.delivery_count for d in first] == [1, 1, 1]
    assert [d.coordinates for d in first] == ["c-0-0", "c-0-1", "c-0-2"]
    first[0].ack()
    first[1].nack()
    first[2].ack()  # acked above an unsettled one: not committed yet
    await sub.settle(first)
    again = await fetch_all(sub, 1)
    assert [(d.coordinates, d.delivery_count) for d in again] == [("c-0-1", 2)]
    await sub.close()  # nothing more settled: the next owner starts at offset 1
    await emitter.emit(he.Event("c", "k", {"i": 3}))
    sub = await conn.driver.subscribe(spec)
    reread = await fetch_all(sub, 2)
    assert [(d.coordinates, d.delivery_count) for d in reread] == [("c-0-1", 3), ("c-0-3", 1)]
    for delivery in reread:
        delivery.ack()
    await sub.settle(reread)
    await emitter.emit(he.Event("c", "k", {"i": 4}))
    last = await fetch_all(sub, 1)
    assert [(d.coordinates, d.delivery_count) for d in last] == [("c-0-4", 1)]
    await sub.close()
    await conn.close()
