"""Left-overs of the receiver review (session 32): close keeps its bound whatever the
driver ignores, nothing it starts runs on unowned, and health names what cannot progress.
Each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event import receiver as receiver_module
from hexa_event.driver import Delivery, Subscription, SubscriptionSpec
from hexa_event.testing import Collector, eventually


async def deaf(release: asyncio.Event, entered: asyncio.Event) -> None:
    """Hang until ``release``, ignoring every cancellation (a driver call that does)."""
    entered.set()
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            continue


def on_subscription(conn: he.Connection, change: Any) -> None:
    """Call ``change(spec, subscription)`` on each subscription the driver makes."""
    subscribe = conn.driver.subscribe

    async def changed(spec: SubscriptionSpec) -> Subscription:
        subscription = await subscribe(spec)
        change(spec, subscription)
        return subscription

    conn.driver.subscribe = changed  # type: ignore[method-assign]


@pytest.mark.parametrize("call", ["settle", "fetch"])
async def test_close_is_bounded_when_a_settle_or_fetch_ignores_cancellation(
    call: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # close() cancelled the settle loop (after its 10 s) and the fetch loop, then waited for
    # them without bound: a driver's settle or fetch that ignores cancellation held close()
    # (and a service's stop) for good.
    monkeypatch.setattr(receiver_module, "_FINAL_SETTLE_TIMEOUT", 0.5)
    conn = he.connect(f"memory://leftovers-close-{call}")
    release, entered = asyncio.Event(), asyncio.Event()

    def change(spec: SubscriptionSpec, subscription: Subscription) -> None:
        if call == "settle":

            async def settle(deliveries: Sequence[Delivery]) -> None:
                await deaf(release, entered)

            subscription.settle = settle  # type: ignore[method-assign]
        else:

            async def fetch(room: int) -> Sequence[Delivery]:
                await deaf(release, entered)
                return ()

            subscription.fetch = fetch  # type: ignore[method-assign]

    on_subscription(conn, change)
    receiver = conn.receiver("svc", drain_timeout=1)
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    await receiver.start()
    await conn.emitter().emit(he.Event("c", "k", {"n": 1}))
    await asyncio.wait_for(entered.wait(), 10)
    began = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="hexa_event.receiver"):
            await asyncio.wait_for(receiver.close(), 10)
        assert time.monotonic() - began < 6
        assert "ignores its cancellation; left behind" in caplog.text
        if call == "settle":
            assert "writing the settlements of a did not end" in caplog.text
    finally:
        release.set()
    await conn.close()


async def test_a_subscribe_left_behind_at_close_has_its_subscription_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A subscribe that ignored its cancellation was left behind by start()/close(): when it
    # returned later, its subscription (group membership, prefetched events) was owned by
    # nobody and never closed.
    conn = he.connect("memory://leftovers-subscribe-behind")
    release, entered = asyncio.Event(), asyncio.Event()
    subscribe = conn.driver.subscribe
    closed: list[str] = []

    async def late(spec: SubscriptionSpec) -> Subscription:
        await deaf(release, entered)
        subscription = await subscribe(spec)
        close = subscription.close

        async def closing() -> None:
            await close()
            closed.append(spec.group)

        subscription.close = closing  # type: ignore[method-assign]
        return subscription

    conn.driver.subscribe = late  # type: ignore[method-assign]
    receiver = conn.receiver("svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    starting = asyncio.create_task(receiver.start())
    await asyncio.wait_for(entered.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="hexa_event.receiver"):
        await asyncio.wait_for(receiver.close(), 5)
        await asyncio.wait_for(starting, 5)
        assert "ignores its cancellation; left behind" in caplog.text
        release.set()  # the driver's subscribe ends after all, with a subscription
        await eventually(lambda: closed == ["a"], within=5)
    assert "closing it" in caplog.text
    await conn.close()


async def test_health_names_a_sync_handler_running_past_its_timeout() -> None:
    # he.timeout cannot stop a sync handler's thread: the wrapper waits for the thread (so
    # the key's next event never runs beside it) and its key waits. Health said healthy
    # all that time (until stall_timeout, 300 s by default, and then not why).
    conn = he.connect("memory://leftovers-sync-timeout")
    release, started = threading.Event(), threading.Event()
    calls: list[int] = []
    receiver = conn.receiver("svc", middlewares=[he.timeout(0.2)])

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(max_retries=3, initial_delay=0.01))
    def blocking(ctx: he.Context, msg: he.Message[Any]) -> None:
        calls.append(msg.attempt)
        if len(calls) == 1:
            started.set()
            release.wait(30)

    try:
        async with receiver:
            await conn.emitter().emit(he.Event("c", "k", {"n": 1}))
            await asyncio.to_thread(started.wait, 10)

            def overrun() -> bool:
                return "still run after they were cancelled" in receiver.health()["reason"]

            await eventually(overrun, within=5, what="health naming the overrun")
            health = receiver.health()
            assert not health["healthy"]
            assert health["actions"]["a"]["stalled"]
            assert "he.timeout" in health["reason"]
            release.set()
            await eventually(lambda: receiver.health()["healthy"], within=10, what="healthy")
            await eventually(lambda: receiver.health()["actions"]["a"]["handled"] == 1, within=10)
            assert receiver.health()["actions"]["a"]["failed"] >= 1  # the overrun failed
    finally:
        release.set()
    await conn.close()
