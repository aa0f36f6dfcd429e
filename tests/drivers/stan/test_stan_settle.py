"""A STAN subscription's receive path and ``settle`` without a server: messages handed over
as nats-py's read loop does reach a waiting ``fetch`` in order, burst after burst; ``settle``
writes one Ack per acked delivery in one write and updates each member's held, acked and
nacked sequences, or, when it refuses the batch, leaves them as they were."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NatsClient

from hexa_event.driver import Delivery, RawRecord, SubscriptionSpec
from hexa_event.drivers.stan.acked import RecentAcks
from hexa_event.drivers.stan.consumer import ChannelMember, StanDelivery, StanSubscription
from hexa_event.drivers.stan.options import StanOptions
from hexa_event.drivers.stan.protocol import Ack, MsgProto, encode_body
from hexa_event.drivers.stan.session import StanSession
from hexa_event.drivers.stan.writes import pub_head
from hexa_event.errors import DriverError


class _Client(NatsClient):
    """A connected-looking nats-py client that keeps what it would write."""

    def __init__(self) -> None:
        super().__init__()
        self._status = NatsClient.CONNECTED
        self.commands: list[bytes] = []

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        self.commands.append(cmd)

    async def _flush_pending(self, force_flush: bool = False) -> None:
        pass


def _subscription(*channels: str) -> tuple[_Client, StanSubscription]:
    nc = _Client()
    session = StanSession(StanOptions(cluster_id="c", client_id="test"), nc)
    sub = StanSubscription(session, SubscriptionSpec(group="g", channels=channels))
    for member in sub.members:
        member.ack_inbox = f"_STAN.ack.{member.channel}"
        member.ack_command = pub_head(member.ack_inbox)
    return nc, sub


def _frame(channel: str, sequence: int) -> bytes:
    proto = MsgProto(
        sequence=sequence,
        subject=channel,
        data=encode_body(f"k{sequence}", {"n": b"%d" % sequence}, b"{}"),
        timestamp=time.time_ns(),
    )
    return proto.encode()


def _acks(nc: _Client) -> list[tuple[str, int]]:
    """(ack inbox, sequence) of each Ack written, in order."""
    out = []
    for command in nc.commands:
        lines = command.split(b"\r\n")
        for head, payload in zip(lines[0::2], lines[1::2], strict=False):
            if head.startswith(b"PUB "):
                ack = Ack.decode(payload)
                out.append((head.split()[1].decode(), ack.sequence))
    return out


async def test_bursts_reach_a_waiting_fetch_in_order() -> None:
    _, sub = _subscription("orders")
    [member] = sub.members
    fetched: list[int] = []

    async def fetch_all(count: int) -> None:
        while len(fetched) < count:
            fetched.extend(d.sequence for d in await sub.fetch(7))  # drained in pieces

    task = asyncio.create_task(fetch_all(300))
    sequence = 0
    for burst in (1, 40, 3, 100, 156):
        await asyncio.sleep(0)  # the fetch runs: it waits on an empty buffer, or drains it
        for _ in range(burst):  # one read of the socket: handed over without a yield
            sequence += 1
            member._on_message(_frame("orders", sequence))
    async with asyncio.timeout(5):
        await task
    assert fetched == list(range(1, 301))
    assert member.held == set(fetched)


async def test_settle_writes_the_acks_and_updates_each_members_sequences() -> None:
    nc, sub = _subscription("a", "b")
    a, b = sub.members
    for sequence in (1, 2, 3):
        a._on_message(_frame("a", sequence))
        b._on_message(_frame("b", 10 + sequence))
    deliveries = await sub.fetch(100)
    outcomes = {1: "ack", 2: "nack-later", 3: "ack", 11: "nack", 12: "ack", 13: "ack"}
    for delivery in deliveries:
        outcome = outcomes[delivery.sequence]  # type: ignore[attr-defined]
        if outcome == "ack":
            delivery.ack()
        else:
            delivery.nack(30.0 if outcome == "nack-later" else 0.0)
    before = time.monotonic()
    await sub.settle(deliveries)
    assert len(nc.commands) == 1  # every Ack in one write
    acks = [("_STAN.ack.a", 1), ("_STAN.ack.b", 12), ("_STAN.ack.a", 3), ("_STAN.ack.b", 13)]
    assert _acks(nc) == acks  # in the order of the deliveries
    assert not a.held
    assert not b.held
    now = time.monotonic()
    assert [s for s in (1, 2, 3) if a.acked.covers(s, now)] == [1, 3]
    assert [s for s in (11, 12, 13) if b.acked.covers(s, now)] == [12, 13]
    assert list(a.nacked) == [2]
    assert a.nacked[2] >= before + 30.0
    assert not b.nacked  # a nack without a delay is an Ack not sent, nothing kept


async def test_a_refused_settle_leaves_every_sequence_held() -> None:
    nc, sub = _subscription("orders")
    [member] = sub.members
    for sequence in (1, 2, 3):
        member._on_message(_frame("orders", sequence))
    deliveries: list[Delivery] = list(await sub.fetch(100))
    for delivery in deliveries:
        delivery.ack()
    foreign = Delivery(RawRecord("orders", "", {}, b""), coordinates="x")
    foreign.ack()
    with pytest.raises(TypeError):
        await sub.settle([*deliveries[:2], foreign, deliveries[2]])
    # Nothing written, nothing forgotten: a copy sent meanwhile is still one being handled.
    assert not nc.commands
    assert member.held == {1, 2, 3}
    assert not member.acked
    member.ack_inbox = ""  # the connection's acks cannot go out
    with pytest.raises(DriverError):
        await sub.settle(deliveries)
    assert member.held == {1, 2, 3}
    assert not member.acked
    member.ack_inbox = "_STAN.ack.orders"
    await sub.settle(deliveries)  # the core settles the batch again
    assert _acks(nc) == [("_STAN.ack.orders", s) for s in (1, 2, 3)]
    assert not member.held


def test_add_all_is_add_of_each_in_order() -> None:
    one, many = RecentAcks(keep=4.0), RecentAcks(keep=4.0)
    for acks in (one, many):
        acks.add(5, now=100.0)
        acks.add(6, now=100.5)
    for sequence in (7, 5, 8):  # 5 acked again: it moves to the end with its newer time
        one.add(sequence, now=101.0)
    many.add_all([7, 5, 8], now=101.0)
    many.add_all([9, 10], now=101.5)  # none acked before: the common case
    one.add(9, now=101.5)
    one.add(10, now=101.5)
    for acks in (one, many):
        acks.prune(now=104.6)  # 6 expires; 5's first entry is gone, its second stands
        assert [s for s in range(4, 12) if acks.covers(s, 104.6)] == [5, 7, 8, 9, 10]
        assert not acks.covers(5, 105.0)


def test_a_delivery_is_made_from_the_envelope_or_whole() -> None:
    _, sub = _subscription("orders")
    [member] = sub.members
    enveloped = StanDelivery(member, MsgProto(sequence=1, subject="orders", data=_body()))
    assert enveloped.record == RawRecord("orders", "k", {"h": b"v"}, b"payload")
    foreign = StanDelivery(member, MsgProto(sequence=2, subject="orders", data=b"plain bytes"))
    assert foreign.record == RawRecord("orders", "", {}, b"plain bytes")
    assert isinstance(member, ChannelMember)


def _body() -> bytes:
    return encode_body("k", {"h": b"v"}, b"payload")
