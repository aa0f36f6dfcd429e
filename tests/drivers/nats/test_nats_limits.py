"""Issue 23 #2 and #5: what the server would refuse is refused before sending, naming the
limit (a header over max_payload, a channel too long for the protocol line); and a
connection the server closes for good is noticed: health says why, the receivers on it stop
(``wait_closed`` returns, raising), and emits go on over a new connection."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats_helpers import TEST_OPTIONS

import hexa_event as he
from hexa_event.drivers.nats import NatsDriver
from hexa_event.errors import NotStoredError, PartialPublishError, ReceiverFailedError
from hexa_event.testing.waiting import Collector, eventually


async def _round_trip(conn: he.Connection, channel: str, got: Collector, n: int) -> None:
    await conn.emitter().emit(he.Event(channel, "k", {"n": n}))
    await got.wait_for(n + 1, within=30)


async def test_over_limit_emits_are_refused_before_sending_and_the_connection_lives(
    nats_server: str,
) -> None:
    driver = NatsDriver.from_url(nats_server, **TEST_OPTIONS)
    conn = he.connect(nats_server, options=driver.options)
    channel = f"limits-{uuid.uuid4().hex[:8]}"
    got = Collector()
    receiver = conn.receiver("svc")

    @receiver.subscribe(channel, action=f"act-{channel}")
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        got.add(msg.payload["n"])

    emitter = conn.emitter()
    async with receiver:
        await _round_trip(conn, channel, got, 0)
        max_payload = (await conn.driver.connection()).max_payload  # type: ignore[attr-defined]

        big_header = he.Event(channel, "k", {"n": -1}, headers={"x-big": "h" * max_payload})
        with pytest.raises(NotStoredError, match="max_payload") as caught:
            await emitter.emit(big_header)
        assert caught.value.limit == "max_payload"
        assert not caught.value.retriable
        assert str(max_payload) in str(caught.value)

        big_body = he.Event(channel, "k", {"blob": "b" * max_payload})
        with pytest.raises(NotStoredError, match="max_payload"):
            await emitter.emit(big_body)

        with pytest.raises(NotStoredError, match="max_control_line") as long_channel:
            await emitter.emit(he.Event("c" * 5000, "k", {"n": -1}))
        assert long_channel.value.limit == "max_control_line"

        # In a batch: the refused one is named, the others are known not sent.
        with pytest.raises(PartialPublishError) as partial:
            await emitter.emit_many([he.Event(channel, "k", {"n": -1}), big_header])
        assert partial.value.stored == frozenset()
        assert isinstance(partial.value.failed[1], NotStoredError)
        assert not partial.value.failed[1].retriable
        assert partial.value.failed[0].retriable

        # Nothing of it reached the server: the connection and the receiver live on.
        await _round_trip(conn, channel, got, 1)
        assert got.items == [0, 1]
        assert receiver.health()["healthy"], receiver.health()
    await conn.close()


async def test_a_connection_closed_for_good_is_noticed(nats_server: str) -> None:
    conn = he.connect(nats_server, **TEST_OPTIONS)
    channel = f"closed-{uuid.uuid4().hex[:8]}"
    got = Collector()
    receiver = conn.receiver("svc")

    @receiver.subscribe(channel, action=f"act-{channel}")
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        got.add(msg.payload["n"])

    await receiver.start()
    try:
        await _round_trip(conn, channel, got, 0)
        nc = await conn.driver.connection()  # type: ignore[attr-defined]
        # A protocol error (what an unchecked oversized header was): the server answers
        # -ERR, and nats-py closes the connection for good. Handed to nats-py as if read:
        # from a real server, its hang-up races the -ERR (nats-py schedules the close as a
        # task, and its read loop, seeing the hang-up first, reconnects instead).
        await nc._process_err("'Unknown Protocol Operation'")
        await eventually(lambda: nc.is_closed, within=15)

        # Health turns unhealthy at once (a request cut by the close may be reported
        # first); within a bound it names the cause.
        await eventually(lambda: not receiver.health()["healthy"], within=15)
        await eventually(
            lambda: "closed for good" in receiver.health()["reason"],
            within=30,
            what="health naming the closed connection",
        )
        with pytest.raises(ReceiverFailedError, match="closed for good"):
            async with asyncio.timeout(30):
                await receiver.wait_closed()
        assert receiver.health()["state"] == "closed"

        # Emits open a new connection; a new receiver reads what was emitted.
        await conn.emitter().emit(he.Event(channel, "k", {"n": 1}))
        again = conn.receiver("svc2")
        later = Collector()

        @again.subscribe(channel, action=f"act2-{channel}")
        async def handle2(_c: he.Context, msg: he.Message[Any]) -> None:
            later.add(msg.payload["n"])

        async with again:
            await later.wait_for(2, within=30)
            assert sorted(later.items) == [0, 1]
            assert again.health()["healthy"], again.health()
    finally:
        await receiver.close()
        await conn.close()
