"""Helpers of the engines' attack tests (tests/drivers/*/test_*_attack.py): a hanging
handler, the stall health must report, and close in bounded time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import hexa_event as he
from hexa_event.errors import ReceiverFailedError
from hexa_event.testing.waiting import eventually

Emit = Callable[[Any, str, list[tuple[str, int]]], Awaitable[None]]
"""``(driver, channel, [(key, n), ...])``: one event ``{"n": n}`` per pair, in order."""
ReadAgain = Callable[[Any, str, str, int], Awaitable[list[int]]]
"""``(driver, channel, action, count)``: what the next receiver of the action reads."""


def reports_stall(receiver: he.Receiver, action: str) -> bool:
    """Whether health says ``action`` stalls, naming it."""
    health = receiver.health()
    return (
        not health["healthy"]
        and health["actions"][action]["stalled"]
        and f"{action}: a delivery has been unsettled" in health["reason"]
    )


async def hanging_handler_round(
    driver: Any, channel: str, action: str, mode: str, emit: Emit, read_again: ReadAgain
) -> None:
    """A handler (``mode``: async, sync or batch) that hangs on one key: the others are
    handled, health says the action stalls, naming it, close returns in bounded time (the
    drain cut at drain_timeout), and the next receiver of the group gets exactly the
    records not handled (for single handlers: the hanging key's, in order)."""
    pairs = [("hang" if n % 10 == 7 else f"k{n % 3}", n) for n in range(60)]
    hanging = [n for key, n in pairs if key == "hang"]
    handled: list[int] = []
    stop_thread = threading.Event()
    await emit(driver, channel, pairs)
    receiver = he.Receiver(driver, name=action, stall_timeout=0.5, drain_timeout=0.5)
    if mode == "sync":

        @receiver.subscribe(channel, action=action, concurrency=4)
        def handle_sync(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.key == "hang":
                stop_thread.wait(60)
                return
            handled.append(msg.payload["n"])

    elif mode == "async":

        @receiver.subscribe(channel, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.key == "hang":
                await asyncio.Event().wait()
            handled.append(msg.payload["n"])

    else:

        @receiver.subscribe(channel, action=action, batch=he.Batch(5, 0.05))
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
            if any(msg.key == "hang" for msg in msgs):
                await asyncio.Event().wait()
            handled.extend(msg.payload["n"] for msg in msgs)

    await receiver.start()
    try:
        if mode != "batch":
            others = {n for key, n in pairs if key != "hang"}
            await eventually(lambda: set(handled) == others, within=60, what="others handled")
        else:
            await eventually(lambda: bool(handled), within=60, what="a batch handled")
        await eventually(
            lambda: reports_stall(receiver, action),
            within=30,
            what="health reports the hanging handler",
        )
    finally:
        started = time.monotonic()
        await receiver.close()
        closing = time.monotonic() - started
        stop_thread.set()
    assert closing < 15
    assert len(handled) == len(set(handled))
    rest = [n for _, n in pairs if n not in handled]
    if mode != "batch":
        assert rest == hanging
    assert sorted(await read_again(driver, channel, action, len(rest))) == rest


async def driver_closed_under_receiver(driver: Any, channel: str, action: str) -> None:
    """The driver closed while ``action``'s handlers run on ``channel`` (records of keys
    k0-k2 emitted beforehand), k0's handler finishing after that: the receiver closes
    itself within 5 s, fails with ReceiverFailedError, and health says unhealthy, why."""
    receiver = he.Receiver(driver, name=action, drain_timeout=0.5)
    started_handling = asyncio.Event()
    driver_closed = asyncio.Event()

    @receiver.subscribe(channel, action=action, concurrency=4)
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        started_handling.set()
        if msg.key == "k0":  # handled once the driver is closed: its ack cannot be written
            await driver_closed.wait()
            return
        await asyncio.Event().wait()

    await receiver.start()
    try:
        await asyncio.wait_for(started_handling.wait(), 30)
        started = time.monotonic()
        await asyncio.wait_for(driver.close(), 30)
        driver_closed.set()
        with pytest.raises(ReceiverFailedError):
            await asyncio.wait_for(receiver.wait_closed(), 30)
        assert time.monotonic() - started < 5
        health = receiver.health()
        assert not health["healthy"]
        assert health["reason"]
    finally:
        await asyncio.wait_for(receiver.close(), 30)
