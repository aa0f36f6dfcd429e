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
from test_batch_records import RecordBatches

import hexa_event as he
from hexa_event import receiver as receiver_module
from hexa_event.connect import wrap
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


async def one_event_in(conn: he.Connection, receiver: he.Receiver, entered: asyncio.Event) -> None:
    """Start ``receiver``, emit one event to channel "c", wait until ``entered`` is set."""
    await receiver.start()
    await conn.emitter().emit(he.Event("c", "k", {"n": 1}))
    await asyncio.wait_for(entered.wait(), 10)


def left_running() -> list[asyncio.Task[Any]]:
    """Tasks of this loop running action a's lanes or batches (``hexa-event:a-...``)."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_name().startswith("hexa-event:a-")
    ]


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
    await one_event_in(conn, receiver, entered)
    began = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="hexa_event.receiver"):
            await asyncio.wait_for(receiver.close(), 10)
        assert time.monotonic() - began < 6
        assert "ignores its cancellation; left behind, waiting in" in caplog.text
        assert f"{call} (core/test_receiver_leftovers.py:" in caplog.text  # where it hangs
        assert "> deaf (core/test_receiver_leftovers.py:" in caplog.text
        if call == "settle":
            assert "writing the settlements of a did not end" in caplog.text
    finally:
        release.set()
    await conn.close()


@pytest.mark.parametrize(
    ("batch", "records"),
    [(False, False), (True, False), (False, True)],
    ids=["handler", "batch handler", "handler over record batches"],
)
async def test_a_handler_ignoring_cancellation_is_left_behind_at_close_naming_where_it_waits(
    batch: bool, records: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A handler that ignores its cancellation (a middleware's database call stuck in a
    # thread, a library swallowing CancelledError) is left behind once close() has waited a
    # second, and its event is given back. The log line said only "a handler of a": the
    # person on call could not tell which call hung (the handler's own code, the inbox's
    # database call, a driver's).
    conn = he.connect(f"memory://leftovers-handler-{batch}-{records}")
    if records:  # a driver handing out record batches, as Kafka (hexa_event.fetched)
        conn = wrap(RecordBatches(conn.driver, holds=False))
    release, entered = asyncio.Event(), asyncio.Event()
    again = Collector()

    async def stubborn(ctx: he.Context, msg: Any) -> None:
        await deaf(release, entered)

    receiver = conn.receiver("svc", drain_timeout=0.2)
    receiver.subscribe("c", action="a", handler=stubborn, batch=he.Batch() if batch else None)
    await one_event_in(conn, receiver, entered)
    began = time.monotonic()
    try:
        with caplog.at_level(logging.ERROR, logger="hexa_event.receiver"):
            await asyncio.wait_for(receiver.close(), 10)
        assert time.monotonic() - began < 5
        assert "a handler of a ignores cancellation; left behind, waiting in " in caplog.text
        assert "stubborn (core/test_receiver_leftovers.py:" in caplog.text
        assert "> deaf (core/test_receiver_leftovers.py:" in caplog.text
        # Its event was given back: the next member gets it.
        successor = conn.receiver("svc2")
        successor.subscribe("c", action="a", handler=again.add_message)
        async with successor:
            await again.wait_for(1, within=10)
        # Released, the handler ends; what ran it ends too (it ran on, waiting for lanes
        # that never came, until the loop closed) and logs no error.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hexa_event"):
            release.set()
            await eventually(lambda: not left_running(), within=5)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert "left behind at close has ended; its event" in caplog.text
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
        assert "ignores its cancellation; left behind, waiting in" in caplog.text
        assert "late (core/test_receiver_leftovers.py:" in caplog.text
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


@pytest.mark.parametrize("mixed", [False, True])
async def test_a_batch_failed_in_an_exception_group_fails_only_what_it_names(mixed: bool) -> None:
    # A batch handler using a task group raises an ExceptionGroup: one holding a
    # BatchFailed failed the whole batch, not the messages it named. (Mixed with another
    # exception, every message fails: those named with their own exception. That case
    # passed before too.)
    conn = he.connect(f"memory://leftovers-batch-group-{mixed}")
    receiver = conn.receiver("svc")
    seen: list[list[int]] = []

    async def fail(msgs: list[he.Message[Any]]) -> None:
        raise he.BatchFailed({msgs[0].id: ValueError("the first one")})

    async def broken() -> None:
        raise RuntimeError("all of them")

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        seen.append(sorted(m.payload["n"] for m in msgs))
        async with asyncio.TaskGroup() as group:
            group.create_task(fail(msgs))
            if mixed:
                group.create_task(broken())

    receiver.subscribe(
        "c",
        action="a",
        batch=he.Batch(max_size=2, max_wait=5),
        retry=he.RetryPolicy(max_retries=0),
        handler=handle,
    )
    async with receiver:
        await conn.emitter().emit_many(
            [he.Event("c", "k1", {"n": 1}), he.Event("c", "k2", {"n": 2})]
        )
        done = 2 if mixed else 1
        await eventually(
            lambda: receiver.health()["actions"]["a"]["dead_lettered"] == done, within=10
        )
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10)
        actions = receiver.health()["actions"]["a"]
    assert seen == [[1, 2]]
    assert actions["dead_lettered"] == done
    assert actions["handled"] == 2 - done
    await conn.close()


async def test_an_in_place_re_run_reads_a_batch_failed_in_an_exception_group() -> None:
    # An in-place retry re-runs a failed message alone; there, an ExceptionGroup holding a
    # BatchFailed was not read: its PermanentError did not dead-letter at once, the group
    # was retried to the end of the policy instead.
    conn = he.connect("memory://leftovers-batch-group-in-place")
    receiver = conn.receiver("svc")
    attempts: list[int] = []

    async def fail(msg: he.Message[Any]) -> None:
        error = ValueError("again") if msg.attempt == 1 else he.PermanentError("never")
        raise he.BatchFailed({msg.id: error})

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        attempts.extend(m.attempt for m in msgs)
        async with asyncio.TaskGroup() as group:
            for msg in msgs:
                group.create_task(fail(msg))

    receiver.subscribe(
        "c",
        action="a",
        batch=he.Batch(max_size=10, max_wait=0.05),
        retry=he.RetryPolicy(max_retries=3, in_place=True, initial_delay=0.01),
        handler=handle,
    )
    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {"n": 1}))
        await eventually(lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 1, within=10)
        actions = receiver.health()["actions"]["a"]
    assert attempts == [1, 2]
    assert actions["failed"] == 2
    await conn.close()
