"""Deliveries lost in transit: a pinned consumer's later records wait for them.

The tracking itself without a server, then the defect reproduced on the real one: a
proxy loses one delivery and cuts the connection (``nats_proxy``), and the key's later
records, delivered at once after the reconnect, must still run after it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from nats_helpers import PARTITIONED_OPTIONS, nats_url
from nats_proxy import LosingProxy

import hexa_event as he
from hexa_event.drivers.nats import NatsSubscriptionOptions
from hexa_event.drivers.nats.gaps import LostInTransit
from hexa_event.testing.waiting import eventually

# -- the tracking (no server) -----------------------------------------------------------------


@dataclass
class D:
    seq: int
    cseq: int
    delivery_count: int = 1


def test_consecutive_deliveries_pass() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    for n in range(1, 6):
        d = D(seq=10 * n, cseq=n)
        assert gaps.admit(d, now=0) == [d]
    assert not gaps.holding
    assert gaps.lost == 0
    assert gaps.describe(0) == ""


def test_later_records_wait_until_the_lost_ones_come_back() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    # Deliveries 2 and 3 (records 2 and 3) are lost; record 4 comes at once.
    assert gaps.admit(later := D(seq=4, cseq=4), now=1) == []
    assert gaps.holding
    assert gaps.lost == 2
    assert len(gaps) == 1
    assert "2 deliveries lost in transit" in gaps.describe(1)
    assert gaps.admit(five := D(seq=5, cseq=5), now=1) == []
    # A redelivery of an older record (one this member holds) passes and does not count.
    assert gaps.admit(old := D(seq=1, cseq=6, delivery_count=2), now=2) == [old]
    assert gaps.admit(two := D(seq=2, cseq=7, delivery_count=2), now=6) == [two]
    assert gaps.holding
    assert gaps.admit(three := D(seq=3, cseq=8, delivery_count=2), now=6) == [
        three,
        later,
        five,
    ]
    assert not gaps.holding
    assert len(gaps) == 0


def test_a_first_delivery_after_the_due_time_ends_the_hold() -> None:
    """The server sends due redeliveries first: a new record after the lost ones were due
    means none is coming (acked or deleted meanwhile)."""
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    assert gaps.admit(held := D(seq=3, cseq=3), now=0) == []
    assert gaps.probing(5.9) == 0
    assert gaps.probing(6.0) == 1
    assert gaps.admit(D(seq=4, cseq=4), now=5) == []
    assert gaps.admit(new := D(seq=5, cseq=5), now=6) == [held, D(seq=4, cseq=4), new]
    assert not gaps.holding


def test_an_idle_consumer_lets_go_after_the_due_time() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    assert gaps.admit(held := D(seq=3, cseq=3), now=0) == []
    assert gaps.expire(6.9) == []
    assert gaps.expire(7.0) == [held]
    assert not gaps.holding


def test_a_consumer_sequence_going_back_counts_anew() -> None:
    """The server lost its consumer state (or made the consumer again): no gap."""
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=7, cseq=7), now=0)
    assert gaps.admit(d := D(seq=5, cseq=3), now=0) == [d]
    assert gaps.admit(e := D(seq=6, cseq=4), now=0) == [e]
    assert not gaps.holding


def test_a_hand_over_gives_parked_records_back_after_the_due_time() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.admit(held := D(seq=3, cseq=3), now=0)
    ((back, delay),) = gaps.give_back(now=2)
    assert back is held
    assert 4.0 < delay < 4.2
    assert not gaps.holding
    assert len(gaps) == 0


# -- on the server ----------------------------------------------------------------------------


@pytest.mark.nats
async def test_a_delivery_lost_at_a_reconnect_does_not_let_later_records_overtake(
    nats_server: str,
) -> None:
    """One key: records 0-2 handled, record 3's delivery lost with the connection, records
    4-9 emitted after the reconnect. The server sends 3 again only after ``ack_wait`` but
    4-9 at once: they must still run after 3, and health says why they wait."""
    tag = uuid.uuid4().hex[:8]
    channel, action, key = f"lost-{tag}", f"lost-act-{tag}", f"k-{tag}"
    ack_wait = 5.0
    handled: list[int] = []
    problems: list[str] = []

    async def handle(_ctx: Any, msg: he.Message[Any]) -> None:
        handled.append(int(msg.payload["i"]))

    emitting = he.connect(nats_url(), **PARTITIONED_OPTIONS)
    async with LosingProxy(nats_url(), marker=f"lose-{tag}".encode()) as proxy:
        receiving = he.connect(proxy.url, reconnect_wait=0.1, **PARTITIONED_OPTIONS)
        receiver = receiving.receiver(f"lost-{tag}")
        receiver.subscribe(
            channel,
            action=action,
            handler=handle,
            options=NatsSubscriptionOptions(ack_wait=ack_wait, heartbeat=0.5),
        )
        try:
            await emitting.provision([channel])
            emitter = emitting.emitter()
            async with receiver:

                def firsts() -> list[int]:
                    return list(dict.fromkeys(handled))

                def note_problems() -> bool:
                    actions = receiver.health()["actions"]
                    problems.extend(actions.get(action, {}).get("problems", []))
                    return False

                for i in range(3):
                    await emitter.emit(he.Event(channel, key, {"i": i}))
                await eventually(lambda: len(firsts()) == 3, within=30, what="records 0-2")
                await emitter.emit(he.Event(channel, key, {"i": 3, "tag": f"lose-{tag}"}))
                await asyncio.wait_for(proxy.dropped.wait(), 30)
                await eventually(lambda: proxy.connections >= 2, within=30, what="reconnect")
                lost_at = time.monotonic()
                for i in range(4, 10):
                    await emitter.emit(he.Event(channel, key, {"i": i}))
                await eventually(
                    lambda: note_problems() or len(firsts()) == 10,
                    within=ack_wait + 30,
                    what="every record handled",
                )
                took = time.monotonic() - lost_at
        finally:
            await receiving.close()
            await emitting.close()
    assert firsts() == list(range(10)), f"a later record overtook the lost one: {handled}"
    assert any("lost in transit" in p for p in problems), problems
    print(f"\nrecord 3 lost in transit; all ten in order {took:.1f}s after the reconnect")
