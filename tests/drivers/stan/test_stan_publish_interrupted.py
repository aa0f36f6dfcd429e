"""A publish whose write fails gives up its own PubAck waits only, never another call's."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors

from hexa_event.drivers.stan.options import StanOptions
from hexa_event.drivers.stan.protocol import ConnectResponse
from hexa_event.drivers.stan.session import SessionInterruptedError, StanSession


class _Client:
    """A NATS client whose publish (wrapped, so one message at a time) yields; a message
    carrying ``refused`` waits for ``go``, then is refused (the connection's buffer is full)."""

    max_payload = 1 << 20

    def __init__(self, refused: bytes) -> None:
        self.refused = refused
        self.sent: list[bytes] = []
        self.go = asyncio.Event()

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        await asyncio.sleep(0)
        if self.refused in payload:
            await self.go.wait()  # another publish call runs meanwhile
            raise nats.errors.OutboundBufferLimitError
        self.sent.append(payload)


async def test_a_failed_write_resolves_its_own_batch_and_leaves_the_others_waiting() -> None:
    nc = _Client(refused=b"refused-record")
    session = StanSession(StanOptions(cluster_id="test-cluster", client_id="c1"), nc)  # type: ignore[arg-type]
    session.response = ConnectResponse(pub_prefix="_STAN.pub.x")
    session.ack_subject = "_STAN.acks.x"
    failing = asyncio.create_task(session.publish([("ch", b"refused-record")]))
    others = [("ch", b"other-%d" % n) for n in range(3)]
    fine = asyncio.create_task(session.publish(others))
    async with asyncio.timeout(10):
        while len(session._acks) < 4:  # noqa: ASYNC110 (both calls' guids registered)
            await asyncio.sleep(0)
    nc.go.set()
    batch = await failing
    assert isinstance(batch.results[0], SessionInterruptedError)
    other = await fine
    assert other.results == [None, None, None]  # still waiting for their PubAcks
    assert sorted(index for b, index in session._acks.values() if b is other) == [0, 1, 2]
    assert len(nc.sent) == 3


async def test_a_failed_write_that_filled_the_window_wakes_a_call_waiting_for_room() -> None:
    """The window (``max_pub_acks_inflight``) was full with a call's records when its write
    failed: once that call is done with its batch (``forget``, as the producer does), a
    call waiting for room goes on instead of waiting for a PubAck that never comes."""
    nc = _Client(refused=b"refused-record")
    options = StanOptions(cluster_id="test-cluster", client_id="c1", max_pub_acks_inflight=2)
    session = StanSession(options, nc)  # type: ignore[arg-type]
    session.response = ConnectResponse(pub_prefix="_STAN.pub.x")
    session.ack_subject = "_STAN.acks.x"
    failing = asyncio.create_task(
        session.publish([("ch", b"refused-record"), ("ch", b"refused-record too")])
    )
    waiting = asyncio.create_task(session.publish([("ch", b"later")]))
    async with asyncio.timeout(10):
        while len(session._acks) < 2:  # noqa: ASYNC110 (the window is full)
            await asyncio.sleep(0)
    nc.go.set()
    batch = await failing
    assert all(isinstance(r, SessionInterruptedError) for r in batch.results)
    session.forget(batch)
    async with asyncio.timeout(10):
        later = await waiting
    assert later.results == [None]  # sent, waiting for its PubAck
    assert len(nc.sent) == 1
    assert b"later" in nc.sent[0]


async def test_a_publish_cancelled_while_writing_frees_its_places() -> None:
    """An emit cancelled (a caller's timeout) while its PubMsgs were being written: its
    places of the window are freed at once, so a later publish does not wait for PubAcks
    that may never come."""
    nc = _Client(refused=b"stuck-record")  # never released: the write hangs
    options = StanOptions(cluster_id="test-cluster", client_id="c1", max_pub_acks_inflight=1)
    session = StanSession(options, nc)  # type: ignore[arg-type]
    session.response = ConnectResponse(pub_prefix="_STAN.pub.x")
    session.ack_subject = "_STAN.acks.x"
    stuck = asyncio.create_task(session.publish([("ch", b"stuck-record")]))
    async with asyncio.timeout(10):
        while len(session._acks) < 1:  # noqa: ASYNC110 (the window is full)
            await asyncio.sleep(0)
    waiting = asyncio.create_task(session.publish([("ch", b"later")]))
    stuck.cancel()
    async with asyncio.timeout(10):
        while not stuck.done():  # noqa: ASYNC110 (the cancellation lands)
            await asyncio.sleep(0)
        later = await waiting
    assert stuck.cancelled()
    assert later.results == [None]  # sent, waiting for its PubAck
    assert [b for b, _ in session._acks.values()] == [later]
