"""Issue 23 #3 and #5 on STAN: a payload over the server's max_payload and a channel too
long for its protocol line are refused before sending, naming the limit, at once (not after
ack_timeout) and known not stored; and a connection the server closes for good is noticed:
health says why, the receivers on it stop instead of reporting ``running``, emits fail fast."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event.errors import DriverError, NotStoredError, ReceiverFailedError
from hexa_event.testing.waiting import Collector, eventually

pytestmark = pytest.mark.stan


async def test_over_limit_emits_are_refused_at_once_and_the_session_lives(stan_url: str) -> None:
    conn = he.connect(stan_url)
    channel = f"limits-{uuid.uuid4().hex[:8]}"
    got = Collector()
    receiver = conn.receiver("svc")

    @receiver.subscribe(channel, action=f"act-{channel}")
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        got.add(msg.payload["n"])

    emitter = conn.emitter()
    try:
        async with receiver:
            await emitter.emit(he.Event(channel, "k", {"n": 0}))
            await got.wait_for(1, within=30)
            started = time.monotonic()
            with pytest.raises(NotStoredError, match="max_payload") as big:
                await emitter.emit(he.Event(channel, "k", {"blob": "b" * (2 * 1024 * 1024)}))
            assert big.value.limit == "max_payload"
            assert not big.value.retriable
            with pytest.raises(NotStoredError, match="max_control_line") as long_channel:
                await emitter.emit(he.Event("c" * 5000, "k", {"n": -1}))
            assert long_channel.value.limit == "max_control_line"
            assert time.monotonic() - started < 5  # refused, not timed out
            await emitter.emit(he.Event(channel, "k", {"n": 1}))
            await got.wait_for(2, within=30)
            assert got.items == [0, 1]
            assert receiver.health()["healthy"], receiver.health()
    finally:
        await conn.close()


async def test_a_connection_closed_for_good_stops_the_receivers(stan_url: str) -> None:
    conn = he.connect(stan_url)
    channel = f"closed-{uuid.uuid4().hex[:8]}"
    got = Collector()
    receiver = conn.receiver("svc")

    @receiver.subscribe(channel, action=f"act-{channel}")
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        got.add(msg.payload["n"])

    await receiver.start()
    try:
        await conn.emitter().emit(he.Event(channel, "k", {"n": 0}))
        await got.wait_for(1, within=30)
        nc = conn.driver.session.nc  # type: ignore[attr-defined]
        # What an unchecked 5,000-character channel did: a protocol line too long, which
        # the server answers by closing the connection (nats-py does not reconnect then).
        await nc.publish("c" * 5000, b"")
        await eventually(lambda: nc.is_closed, within=15)

        with pytest.raises(ReceiverFailedError, match="closed for good"):
            async with asyncio.timeout(30):
                await receiver.wait_closed()
        health = receiver.health()
        assert health["state"] == "closed"
        assert not health["healthy"]
        assert "closed for good" in health["reason"]

        started = time.monotonic()
        with pytest.raises(DriverError, match="closed for good"):
            await conn.emitter().emit(he.Event(channel, "k", {"n": 1}))
        assert time.monotonic() - started < 5
        # Not ready: its subscriptions close without asking the dead connection.
        assert not conn.driver.session.ready  # type: ignore[attr-defined]
    finally:
        await receiver.close()
        await conn.close()
