"""The receive path's exception, cancellation and race paths found in review: each test
fails on the code before its fix."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.driver import Subscription, SubscriptionSpec
from hexa_event.drivers.memory.broker import MemoryBroker
from hexa_event.drivers.memory.driver import MemoryDriver
from hexa_event.testing import Collector, eventually


def memory() -> he.Connection:
    return he.connect(f"memory://{uuid.uuid4().hex}")


def _ours_alive() -> list[str]:
    """The names of the library's tasks still running (fetch, settle, lag, workers)."""
    return sorted(
        task.get_name()
        for task in asyncio.all_tasks()
        if not task.done() and task.get_name().startswith("hexa-")
    )


async def test_a_sync_handler_raising_stop_iteration_fails_its_event_instead_of_hanging() -> None:
    # A Future refuses StopIteration (TypeError in the loop's callback): the handler's
    # future was never resolved, its key hung until close and the event was never settled.
    conn = memory()
    letters = Collector()
    receiver = conn.receiver("svc", drain_timeout=1)

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(max_retries=0))
    def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        next(iter(()))  # the classic unguarded next()

    receiver.subscribe("a.dlq", action="reader", handler=letters.add_message)
    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {"n": 1}))
        (letter,) = await letters.wait_for(1, within=10)
        assert receiver.health()["actions"]["a"]["dead_lettered"] == 1
    assert letter.headers[env.ERROR_TYPE] == b"RuntimeError"
    assert b"StopIteration" in letter.headers[env.ERROR_MESSAGE]
    await conn.close()


async def test_close_during_start_leaves_no_subscription_or_task_behind() -> None:
    # close() (a SIGTERM, or the receiver failing itself) while start() still subscribes:
    # the subscription made after close() ran was kept, with its settle loop and workers.
    broker = MemoryBroker()
    driver = MemoryDriver(broker)
    entered, gate = asyncio.Event(), asyncio.Event()
    subscribe = driver.subscribe

    async def slow_subscribe(spec: SubscriptionSpec) -> Subscription:
        entered.set()
        await gate.wait()
        return await subscribe(spec)

    driver.subscribe = slow_subscribe  # type: ignore[method-assign]
    receiver = he.Receiver(driver, name="svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    starting = asyncio.create_task(receiver.start())
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(receiver.close(), 5)
    gate.set()
    await asyncio.wait_for(starting, 5)
    group = broker.groups.get("a")
    assert group is None or group.members == [], "the group still has a live member"
    assert _ours_alive() == []
    assert receiver.health()["state"] == "closed"
    await driver.close()


async def test_a_lag_sample_that_is_not_a_number_is_reported_and_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # int(n) ran outside the try: one sample of garbage from a driver ended the lag task
    # silently (no lag_error, and the lag never sampled again).
    driver = MemoryDriver()
    samples: list[Mapping[str, Any]] = [{"c": float("nan")}, {"c": "many"}]
    subscribe = driver.subscribe

    async def garbage_first(spec: SubscriptionSpec) -> Subscription:
        subscription = await subscribe(spec)

        async def lag() -> Mapping[str, Any]:
            return samples.pop(0) if samples else {"c": 3}

        subscription.lag = lag  # type: ignore[method-assign]
        return subscription

    driver.subscribe = garbage_first  # type: ignore[method-assign]
    receiver = he.Receiver(driver, name="svc", lag_interval=0.1)
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    with caplog.at_level(logging.WARNING, logger="hexa_event.receiver"):
        async with receiver:
            await eventually(
                lambda: receiver.health()["actions"]["a"]["lag"] == 3, within=10, what="lag 3"
            )
            action = receiver.health()["actions"]["a"]
            assert action["lag_error"] == ""
            assert receiver.health()["healthy"]
    assert "cannot read the lag of a: ValueError" in caplog.text
    await driver.close()


async def test_a_handler_that_closes_its_receiver_lets_the_close_finish() -> None:
    # close() ran in the handler's task: the drain's end cancels the workers, so it
    # cancelled the close half-way (subscription open, settle loop running, never closed).
    broker = MemoryBroker()
    driver = MemoryDriver(broker)
    receiver = he.Receiver(driver, name="svc", drain_timeout=0.2)

    @receiver.subscribe("c", action="a")
    async def stop(ctx: he.Context, msg: he.Message[Any]) -> None:
        await receiver.close()

    await receiver.start()
    await he.Emitter(driver).emit(he.Event("c", "k", {}))
    await asyncio.wait_for(receiver.wait_closed(), 10)
    assert broker.groups["a"].members == []
    assert _ours_alive() == []
    await driver.close()


async def test_a_close_whose_caller_gives_up_still_closes() -> None:
    # asyncio.wait_for(receiver.close(), t) shorter than the drain cancelled the close
    # half-way: the receiver never closed and its subscription stayed a group member.
    broker = MemoryBroker()
    driver = MemoryDriver(broker)
    receiver = he.Receiver(driver, name="svc", drain_timeout=0.3)
    running = asyncio.Event()

    @receiver.subscribe("c", action="a")
    async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        running.set()
        await asyncio.sleep(60)

    await receiver.start()
    await he.Emitter(driver).emit(he.Event("c", "k", {}))
    await asyncio.wait_for(running.wait(), 10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(receiver.close(), 0.05)
    await asyncio.wait_for(receiver.wait_closed(), 10)
    assert broker.groups["a"].members == []
    assert _ours_alive() == []
    await driver.close()


@dataclass
class Picky:
    n: int

    def __post_init__(self) -> None:
        next(iter(()))  # an unguarded next(): StopIteration out of the decoding


async def test_a_reply_whose_decoding_raises_stop_iteration_fails_that_request_only() -> None:
    # The reply reader handed the StopIteration to a Future, which refuses it with a
    # TypeError: the reader task ended and every later request of the emitter timed out.
    conn = memory()
    replier = conn.emitter()
    receiver = conn.receiver("svc")

    @receiver.subscribe("q", action="answer")
    async def answer(ctx: he.Context, msg: he.Message[Any]) -> None:
        await replier.reply(ctx, msg, {"n": 1})

    async with receiver:
        asker = conn.emitter()
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asker.request(he.Event("q", "k", {}), timeout=5, payload=Picky)
        reply = await asker.request(he.Event("q", "k", {}), timeout=5)
        assert reply.payload == {"n": 1}
    await conn.close()
