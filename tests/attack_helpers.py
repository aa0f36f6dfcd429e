"""Helpers of the engines' attack tests (tests/drivers/*/test_*_attack.py): the rounds
every engine runs (garbage records amid ours, handlers raising BaseException subclasses, a
hanging handler, the driver closed under a running receiver), with what an engine does its
own way passed in (``Emit``, ``ReadAgain``)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.driver import Delivery, SubscriptionSpec
from hexa_event.errors import ReceiverFailedError
from hexa_event.testing.waiting import eventually

Emit = Callable[[Any, str, list[tuple[str, int]]], Awaitable[None]]
"""``(driver, channel, [(key, n), ...])``: one event ``{"n": n}`` per pair, in order."""
ReadAgain = Callable[[Any, str, str, int], Awaitable[list[int]]]
"""``(driver, channel, action, count)``: what the next receiver of the action reads."""


async def emit(driver: Any, channel: str, pairs: list[tuple[str, int]]) -> None:
    """One event ``{"n": n}`` per (key, n), in order (an ``Emit``)."""
    await he.Emitter(driver).emit_many(he.Event(channel, key, {"n": n}) for key, n in pairs)


async def read_again(driver: Any, channel: str, action: str, count: int) -> list[int]:
    """What the next receiver of the action reads (a ``ReadAgain``): the ``n`` of each
    event, once ``count`` came and the action's lag is 0."""
    again: list[int] = []
    second = he.Receiver(driver, name=action)

    @second.subscribe(channel, action=action)
    async def handle_again(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        again.append(msg.payload["n"])

    async with second:
        await eventually(lambda: len(again) >= count, within=60, what=f"{count} read again")
        await eventually(lambda: second.health()["actions"][action]["lag"] == 0, within=30)
    return again


async def dead_letters(driver: Any, channel: str, count: int) -> list[Delivery]:
    """The first ``count`` records of the dead-letter ``channel``, read raw through the
    driver (they are poison: no receiver would read them)."""
    spec = SubscriptionSpec(group=f"read-{uuid.uuid4().hex[:8]}", channels=(channel,))
    sub = await driver.subscribe(spec)
    got: list[Delivery] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < count:
                got.extend(await sub.fetch(count))
    finally:
        await sub.close()
    return got


def payload_n(msg: he.Message[Any]) -> int:
    """The ``n`` of an event ``{"n": n}``."""
    return int(msg.payload["n"])


async def garbage_round(
    driver: Any,
    channel: str,
    action: str,
    batch: bool,
    readable: dict[int, str],
    poison: int,
    number: Callable[[he.Message[Any]], int] = payload_n,
) -> tuple[dict[str, list[he.Message[Any]]], list[Delivery]]:
    """Records written on ``channel`` beforehand, read by a single (``batch`` False) or a
    batch handler of ``action``: each the core can read (``readable``: its ``n``, which
    ``number`` tells, -> what it is; ``"ours"`` for our emitters', keys k0-k2) handled once,
    the ``poison`` others dead-lettered as poison; nothing fails, health is healthy, its
    counters exact; the receiver goes on (a later event of ours is handled); ours keep
    their key's order; the dead-letter channel holds the poison records, with that reason.

    Returns what the handler saw, by what it is, and the dead letters (for the engine's own
    checks)."""
    kinds = dict(readable)
    seen: dict[str, list[he.Message[Any]]] = defaultdict(list)
    receiver = he.Receiver(driver, name=action)

    def note(msg: he.Message[Any]) -> None:
        seen[kinds[number(msg)]].append(msg)

    if batch:

        @receiver.subscribe(channel, action=action, batch=he.Batch(max_size=7, max_wait=0.05))
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
            for msg in msgs:
                note(msg)

    else:

        @receiver.subscribe(channel, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
            note(msg)

    async with receiver:

        def settled() -> bool:
            counters = receiver.health()["actions"][action]
            handled = sum(map(len, seen.values()))
            return handled >= len(readable) and counters["poison"] >= poison

        await eventually(settled, within=60, what="every record handled or poison")
        health = receiver.health()
        assert health["healthy"], health["reason"]
        counters = health["actions"][action]
        assert counters["handled"] == len(readable)
        assert counters["poison"] == poison
        assert counters["failed"] == 0
        kinds[999] = "after"  # the receiver goes on: a later event of ours is handled
        await he.Emitter(driver).emit(he.Event(channel, "k0", {"n": 999}))
        await eventually(lambda: len(seen["after"]) == 1, within=30)
    ours_seen = [m.payload["n"] for m in seen["ours"]]
    assert sorted(ours_seen) == [n for n, what in readable.items() if what == "ours"]  # once
    for key in ("k0", "k1", "k2"):
        got = [m.payload["n"] for m in seen["ours"] if m.key == key]
        assert got == sorted(got)
    assert all(len(seen[what]) == 1 for what in set(readable.values()) - {"ours"}), {
        what: len(seen[what]) for what in readable.values()
    }
    dead = await dead_letters(driver, f"{action}.dlq", poison)
    assert len(dead) == poison
    assert {d.record.headers[env.DEAD_LETTER_REASON] for d in dead} == {b"poison"}
    return seen, dead


class _Custom(BaseException):
    """A BaseException of the handler's own."""


RAISED: dict[int, type[BaseException]] = {
    5: SystemExit,
    11: KeyboardInterrupt,
    17: _Custom,
    23: asyncio.CancelledError,
    29: GeneratorExit,
}
"""What the handler of :func:`base_exceptions_round` raises on the first attempt of the
record ``n``."""


async def base_exceptions_round(
    driver: Any, channel: str, action: str, mode: str, emit: Emit, read_again: ReadAgain
) -> None:
    """SystemExit, KeyboardInterrupt, a BaseException of the handler's own, a CancelledError
    the handler raises itself (it is not being cancelled) and GeneratorExit, each raised
    by a handler (``mode``: async, sync or batch) on the first attempt of one record, are
    handler failures: that record (for a batch handler: each record of its batch, and no
    other) goes to a retry copy and is handled on its next attempt, each attempt once; the
    others are handled once, a key's first attempts in order; health stays healthy and
    its counters say exactly that (nothing dead-lettered); the next receiver of the action
    reads nothing again."""
    pairs = [(f"k{n % 4}", n) for n in range(60)]
    runs: list[list[tuple[int, int]]] = []  # each handler call: (n, attempt) of its records
    handled: dict[str, list[int]] = defaultdict(list)  # per key, in the order handled

    def run(msgs: list[he.Message[dict[str, int]]]) -> None:
        runs.append([(msg.payload["n"], msg.attempt) for msg in msgs])
        for msg in msgs:
            n = msg.payload["n"]
            if n in RAISED and msg.attempt == 1:
                raise RAISED[n]()
        for msg in msgs:
            handled[msg.key].append(msg.payload["n"])

    await emit(driver, channel, pairs)
    receiver = he.Receiver(driver, name=action)
    policy = he.RetryPolicy(max_retries=2, initial_delay=0.1)
    if mode == "sync":

        @receiver.subscribe(channel, action=action, retry=policy, concurrency=4)
        def handle_sync(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            run([msg])

    elif mode == "async":

        @receiver.subscribe(channel, action=action, retry=policy, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            run([msg])

    else:

        @receiver.subscribe(channel, action=action, retry=policy, batch=he.Batch(4, 0.05))
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
            run(msgs)

    def done() -> bool:
        return {n for numbers in handled.values() for n in numbers} == {n for _, n in pairs}

    async with receiver:
        await eventually(done, within=60, what="all handled")
        await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
        health = receiver.health()
        counters = health["actions"][action]
    assert health["healthy"], health["reason"]
    failures = Counter(
        n
        for records in runs
        if any(n in RAISED and attempt == 1 for n, attempt in records)
        for n, _ in records
    )
    if mode != "batch":
        assert failures == dict.fromkeys(RAISED, 1)  # each alone, once
    assert counters["failed"] == counters["retried"] == failures.total()
    assert counters["handled"] == len(pairs)
    assert counters["dead_lettered"] == counters["poison"] == 0
    attempts: dict[int, list[int]] = defaultdict(list)
    for records in runs:
        for n, attempt in records:
            attempts[n].append(attempt)
    assert attempts == {n: list(range(1, failures[n] + 2)) for _, n in pairs}
    everything = [n for numbers in handled.values() for n in numbers]
    assert sorted(everything) == [n for _, n in pairs]  # each once
    for key, numbers in handled.items():  # a retry copy comes after its key's later ones
        firsts = [n for n in numbers if not failures[n]]
        assert firsts == [n for k, n in pairs if k == key and not failures[n]]
    await emit(driver, channel, [("end", -1)])
    assert await read_again(driver, channel, action, 1) == [-1]


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
