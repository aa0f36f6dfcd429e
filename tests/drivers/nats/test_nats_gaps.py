"""Deliveries lost in transit: a pinned consumer's later records wait for them.

The tracking itself without a server, then the defect reproduced on the real one: a
proxy loses one delivery and cuts the connection (``nats_proxy``), and the key's later
records, delivered at once after the reconnect, must still run after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import nats
import pytest
from nats_helpers import PARTITIONED_OPTIONS, nats_url
from nats_proxy import LosingProxy

import hexa_event as he
from hexa_event.driver import RawRecord
from hexa_event.drivers.nats import NatsSubscriptionOptions
from hexa_event.drivers.nats.gaps import LostInTransit
from hexa_event.drivers.nats.naming import channel_subject, partition_of
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
    assert gaps.lost == 0
    assert gaps.describe(0) == ""  # holds nothing


def test_later_records_wait_until_the_lost_ones_come_back() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    # Deliveries 2 and 3 (records 2 and 3) are lost; record 4 comes at once.
    assert gaps.admit(later := D(seq=4, cseq=4), now=1) == []
    assert gaps.describe(0)  # holds records
    assert gaps.lost == 2
    assert len(gaps) == 1
    assert "2 deliveries lost in transit" in gaps.describe(1)
    assert gaps.admit(five := D(seq=5, cseq=5), now=1) == []
    # A redelivery of an older record (one this member holds) passes and does not count.
    assert gaps.admit(old := D(seq=1, cseq=6, delivery_count=2), now=2) == [old]
    assert gaps.admit(two := D(seq=2, cseq=7, delivery_count=2), now=6) == [two]
    assert gaps.describe(0)  # holds records
    assert gaps.admit(three := D(seq=3, cseq=8, delivery_count=2), now=6) == [
        three,
        later,
        five,
    ]
    assert not gaps.describe(0)  # holds nothing
    assert len(gaps) == 0


def test_a_gap_without_a_disruption_is_deliveries_to_another_member() -> None:
    """The pin was elsewhere for a while (expired, a hand-over): those deliveries were
    another member's to settle, so nothing is held."""
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    assert gaps.admit(later := D(seq=9, cseq=9), now=1) == [later]
    assert not gaps.describe(0)  # holds nothing
    assert gaps.lost == 0
    gaps.suspect()  # a reconnect: only the next gap counts, once
    assert gaps.admit(next_one := D(seq=10, cseq=10), now=1) == [next_one]
    assert gaps.admit(after := D(seq=12, cseq=12), now=1) == [after]
    assert gaps.lost == 0


def test_a_first_delivery_after_the_due_time_ends_the_hold() -> None:
    """The server sends due redeliveries first: a new record after the lost ones were due
    means none is coming (acked or deleted meanwhile)."""
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    assert gaps.admit(held := D(seq=3, cseq=3), now=0) == []
    assert gaps.probing(5.9) == 0
    assert gaps.probing(6.0) == 1
    assert gaps.admit(D(seq=4, cseq=4), now=5) == []
    assert gaps.admit(new := D(seq=5, cseq=5), now=6) == [held, D(seq=4, cseq=4), new]
    assert not gaps.describe(0)  # holds nothing


def test_an_idle_consumer_lets_go_after_the_due_time() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    assert gaps.admit(held := D(seq=3, cseq=3), now=0) == []
    assert gaps.expire(6.9) == []
    assert gaps.expire(7.0) == [held]
    assert not gaps.describe(0)  # holds nothing


def test_a_consumer_sequence_going_back_counts_anew() -> None:
    """The server lost its consumer state (or made the consumer again): no gap."""
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=7, cseq=7), now=0)
    assert gaps.admit(d := D(seq=5, cseq=3), now=0) == [d]
    assert gaps.admit(e := D(seq=6, cseq=4), now=0) == [e]
    assert not gaps.describe(0)  # holds nothing


@pytest.mark.parametrize("told", [True, False], ids=["consumer-made-again", "numbers-went-back"])
def test_a_stream_made_again_forgets_the_old_stream_sequences(told: bool) -> None:
    """The stream was deleted and made again under the member: its sequences start at 1
    again, below the old stream's. A delivery lost on the new one is recognised when it
    comes back (it was taken for a record first delivered before the hold, so the later
    records stayed held, and reported, until the lost one was long due)."""
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    for n in range(1, 31):
        gaps.admit(D(seq=n, cseq=n), now=0)
    if told:  # the member made the consumer again itself
        assert gaps.restart() == []
    assert gaps.admit(one := D(seq=1, cseq=1), now=1) == [one]
    gaps.suspect()  # the connection dropped: delivery 2 (record 2) lost
    assert gaps.admit(later := D(seq=3, cseq=3), now=1) == []
    assert gaps.admit(two := D(seq=2, cseq=4, delivery_count=2), now=6) == [two, later]
    assert not gaps.describe(6)  # holds nothing


def test_a_consumer_made_again_hands_out_what_waited_for_its_old_numbers() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    assert gaps.admit(four := D(seq=4, cseq=4), now=0) == []  # records 2 and 3 lost
    assert gaps.admit(three := D(seq=3, cseq=5, delivery_count=2), now=1) == [three]
    assert gaps.restart() == [four]  # record 2 will not come from the old consumer
    assert not gaps.describe(0)  # holds nothing
    assert gaps.admit(d := D(seq=1, cseq=9), now=0) == [d]  # no gap: counting anew


def test_a_hand_over_gives_parked_records_back_after_the_due_time() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    gaps.admit(held := D(seq=3, cseq=3), now=0)
    ((back, delay),) = gaps.give_back(now=2)
    assert back is held
    assert 4.0 < delay < 4.2
    assert not gaps.describe(0)  # holds nothing
    assert len(gaps) == 0


def test_a_record_lost_at_a_second_gap_waits_behind_what_the_first_parked() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    assert gaps.admit(three := D(seq=3, cseq=3), now=0) == []  # 2 lost
    gaps.suspect()  # dropped again
    assert gaps.admit(five := D(seq=5, cseq=5), now=0) == []  # 4 lost
    assert gaps.lost == 2
    # Record 4 comes back first: it is later than record 3, parked, so it waits.
    assert gaps.admit(four := D(seq=4, cseq=6, delivery_count=2), now=5) == []
    assert gaps.describe(0)  # holds records
    assert gaps.admit(two := D(seq=2, cseq=7, delivery_count=2), now=5) == [
        two,
        three,
        four,
        five,
    ]
    assert not gaps.describe(0)  # holds nothing


def test_nothing_parked_gives_nothing_back() -> None:
    gaps: LostInTransit[D] = LostInTransit(ack_wait=5, margin=1)
    assert gaps.give_back(now=0) == []
    gaps.admit(D(seq=1, cseq=1), now=0)
    gaps.suspect()  # the connection dropped
    assert gaps.give_back(now=0) == []


# -- on the server ----------------------------------------------------------------------------


@dataclass
class Lost:
    """What the receiver did after record 3's delivery was lost."""

    handled: list[int]
    problems: list[str]
    took: float
    """Seconds from the reconnect until records 4-9 were handled."""

    @property
    def firsts(self) -> list[int]:
        return list(dict.fromkeys(self.handled))


async def lose_record_3(
    *, delete: bool = False, ack_wait: float = 5.0, recreated: bool = False
) -> Lost:
    """One key of a partitioned stream: records 0-2 handled, record 3's delivery lost with
    the connection (and with ``delete`` the record deleted from the stream then), records
    4-9 emitted after the reconnect; returns once 4-9 were handled. With ``recreated``,
    the stream (one of the test's own) first held 30 records of the key, handled, and was
    deleted under the receiver, which made it again."""
    tag = uuid.uuid4().hex[:8]
    channel, action, key = f"lost-{tag}", f"lost-act-{tag}", f"k-{tag}"
    lost = Lost([], [], 0.0)
    options = dict(PARTITIONED_OPTIONS)
    if recreated:
        options.update(stream=f"LOST_{tag}", subject_prefix=f"lost-{tag}")
    earlier: list[int] = []

    async def handle(_ctx: Any, msg: he.Message[Any]) -> None:
        i = int(msg.payload["i"])
        (lost.handled if i >= 0 else earlier).append(i)

    def note_problems() -> bool:
        actions = receiver.health()["actions"]
        lost.problems.extend(actions.get(action, {}).get("problems", []))
        return False

    emitting = he.connect(nats_url(), **options)
    async with LosingProxy(nats_url(), marker=f"lose-{tag}".encode()) as proxy:
        receiving = he.connect(proxy.url, reconnect_wait=0.1, **options)
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
                if recreated:
                    for _ in range(30):
                        await emitter.emit(he.Event(channel, key, {"i": -1}))
                    await eventually(lambda: len(earlier) >= 30, within=30, what="the 30")
                    await delete_stream(options["stream"])
                for i in range(3):
                    await emitter.emit(he.Event(channel, key, {"i": i}))
                await eventually(lambda: len(lost.firsts) == 3, within=30, what="records 0-2")
                await emitter.emit(he.Event(channel, key, {"i": 3, "tag": f"lose-{tag}"}))
                await asyncio.wait_for(proxy.dropped.wait(), 30)
                if delete:
                    await delete_last(channel, key)
                await eventually(lambda: proxy.connections >= 2, within=30, what="reconnect")
                reconnected = time.monotonic()
                for i in range(4, 10):
                    await emitter.emit(he.Event(channel, key, {"i": i}))
                await eventually(
                    lambda: note_problems() or set(range(4, 10)) <= set(lost.handled),
                    within=ack_wait + 30,
                    what="records 4-9 handled",
                )
                lost.took = time.monotonic() - reconnected
                if not delete:
                    await eventually(lambda: 3 in lost.handled, within=30, what="record 3")
        finally:
            await receiving.close()
            await emitting.close()
            if recreated:  # the test's own stream and its members bucket
                await delete_streams(options["stream"], f"KV_{options['stream']}_members")
    return lost


async def delete_stream(stream: str) -> None:
    """Delete ``stream``; return once a receiver on it made it again."""
    nc = await nats.connect(nats_url())
    try:
        reply = await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"")
        assert json.loads(reply.data).get("success"), reply.data
        deadline = time.monotonic() + 30
        while "error" in json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}")).data):
            assert time.monotonic() < deadline, f"stream {stream} was not made again"
            await asyncio.sleep(0.1)
    finally:
        await nc.close()


async def delete_streams(*streams: str) -> None:
    nc = await nats.connect(nats_url())
    try:
        for stream in streams:
            await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"")
    finally:
        await nc.close()


async def delete_last(channel: str, key: str) -> None:
    """Delete the last record of ``key``'s partition subject from the stream."""
    stream, prefix = PARTITIONED_OPTIONS["stream"], PARTITIONED_OPTIONS["subject_prefix"]
    partition = partition_of(RawRecord(channel, key, {}, b""), PARTITIONED_OPTIONS["partitions"])
    nc = await nats.connect(nats_url())
    try:
        get = {"last_by_subj": channel_subject(prefix, channel, partition)}
        reply = await nc.request(f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps(get).encode())
        seq = json.loads(reply.data)["message"]["seq"]
        delete = {"seq": seq, "no_erase": True}
        reply = await nc.request(f"$JS.API.STREAM.MSG.DELETE.{stream}", json.dumps(delete).encode())
        assert json.loads(reply.data).get("success"), reply.data
    finally:
        await nc.close()


@pytest.mark.nats
async def test_a_delivery_lost_at_a_reconnect_does_not_let_later_records_overtake(
    nats_server: str,
) -> None:
    """The server sends record 3 again only after ``ack_wait`` but 4-9 at once: they must
    still run after 3, and health says why they wait."""
    # ack_wait long enough that record 3 cannot come back before 4-9 were delivered, even
    # when a request on the cut connection delays the member's next pull by 5 s.
    lost = await lose_record_3(ack_wait=8.0)
    assert lost.firsts == list(range(10)), f"a later record overtook the lost one: {lost}"
    assert any("lost in transit" in p for p in lost.problems), lost.problems
    print(f"\nrecord 3 lost in transit; 4-9 handled after it {lost.took:.1f}s after the reconnect")


@pytest.mark.nats
async def test_a_lost_delivery_of_a_stream_made_again_is_recognised_when_it_comes_back(
    nats_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream (30 records further than the new one will be) is deleted and made again
    under the receiver, then record 3 of the new stream is lost in transit: when the server
    sends it again, it ends the hold (the old stream's sequences took it for an earlier
    record, so records 4-9 stayed held, and health said it was lost, until it was long
    due)."""
    caplog.set_level(logging.INFO, logger="hexa_event.drivers.nats.gaps")
    lost = await lose_record_3(ack_wait=8.0, recreated=True)
    assert lost.firsts == list(range(10)), f"a later record overtook the lost one: {lost}"
    assert any("lost in transit" in p for p in lost.problems), lost.problems
    assert "the lost deliveries came back" in caplog.text
    assert "lost deliveries not back" not in caplog.text


@pytest.mark.nats
async def test_a_hold_for_a_lost_delivery_that_never_returns_ends(nats_server: str) -> None:
    """Record 3 is deleted after its delivery was lost, so it never comes back: records 4-9
    are held only until it was due (``ack_wait``), then run, with no stall."""
    ack_wait = 3.0
    lost = await lose_record_3(delete=True, ack_wait=ack_wait)
    assert lost.firsts == [0, 1, 2, *range(4, 10)], lost
    assert any("lost in transit" in p for p in lost.problems), lost.problems
    # Due ack_wait plus two heartbeats (at least 1 s) after the gap, then 1 s of nothing;
    # a few seconds more for a busy machine (without the bound it waits forever).
    assert lost.took < ack_wait + 6, f"held {lost.took:.1f}s"
    print(f"\nrecord 3 lost and deleted; 4-9 handled {lost.took:.1f}s after the reconnect")
