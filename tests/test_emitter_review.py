"""The emitter after close(), and an emitter carried from one event loop to another."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import hexa_event as he
from hexa_event.event import Message


async def test_a_closed_emitter_refuses_emit_as_it_refuses_request() -> None:
    """close() refused later requests (ClosedError) but emit, emit_many and reply went on
    sending: one rule for the whole emitter, naming the fix; the driver stays open."""
    conn = he.connect("memory://")
    emitter = conn.emitter()
    await emitter.emit(he.Event("orders", "k", {"n": 1}))
    await emitter.close()
    with pytest.raises(he.ClosedError, match=r"closed; make a new one \(conn.emitter\(\)\)"):
        await emitter.emit(he.Event("orders", "k", {"n": 2}))
    with pytest.raises(he.ClosedError, match="make a new one"):
        await emitter.emit_many([he.Event("orders", "k", {"n": 3})])
    with pytest.raises(he.ClosedError, match="make a new one"):
        await emitter.request(he.Event("orders", "k", {"n": 4}), timeout=5)
    request = Message(
        id="r1",
        channel="orders",
        key="k",
        payload={},
        headers={},
        attempt=1,
        timestamp=None,
        reply_channel="_reply.x",
    )
    with pytest.raises(he.ClosedError, match="make a new one"):
        await emitter.reply(he.Context(), request, {"ok": True})
    assert emitter.seal(he.Event("orders", "k", {})).channel == "orders"  # sends nothing
    await conn.emitter().emit(he.Event("orders", "k", {"n": 5}))  # the driver is open
    await conn.close()


def test_an_emitter_reused_in_a_second_event_loop_says_so() -> None:
    """An emitter's reply channel is read by tasks of the event loop of its first request:
    a request from a second asyncio.run() waited for a reply that no task of the dead loop
    read, and timed out. It fails at once naming the fix."""
    conn = he.connect("memory://")
    emitter = conn.emitter()
    receiver = conn.receiver("svc")
    replier = conn.emitter()

    @receiver.subscribe("ask", action="answer")
    async def answer(ctx: he.Context, msg: Message[Any]) -> None:
        await replier.reply(ctx, msg, {"ok": msg.payload})

    async def first() -> Any:
        async with receiver:
            return (await emitter.request(he.Event("ask", "k", 1), timeout=10)).payload

    assert asyncio.run(first()) == {"ok": 1}

    async def second() -> None:
        await emitter.request(he.Event("ask", "k", 2), timeout=3)

    with pytest.raises(he.ConfigurationError, match="another event loop") as caught:
        asyncio.run(second())
    assert "asyncio.run" in str(caught.value)


def test_a_connection_closed_under_a_later_event_loop_removes_the_reply_channel() -> None:
    """``asyncio.run(main())`` then ``asyncio.run(conn.close())``: closing awaited the reply
    channel's reading tasks of the first loop, closed by then, and raised RuntimeError
    ('Event loop is closed'), leaving the channel and the driver open."""
    conn = he.connect("memory://")
    emitter = conn.emitter()
    receiver = conn.receiver("svc")
    replier = conn.emitter()
    discarded: list[str] = []
    discard = conn.driver.discard

    async def recorded(channels: Any) -> None:
        discarded.extend(channels)
        await discard(channels)

    conn.driver.discard = recorded  # type: ignore[method-assign]

    @receiver.subscribe("ask", action="answer")
    async def answer(ctx: he.Context, msg: Message[Any]) -> None:
        await replier.reply(ctx, msg, {"ok": msg.payload})

    async def first() -> None:
        async with receiver:
            await emitter.request(he.Event("ask", "k", 1), timeout=10)

    asyncio.run(first())
    channel = emitter.reply_channel
    asyncio.run(conn.close())
    assert discarded == [channel]
