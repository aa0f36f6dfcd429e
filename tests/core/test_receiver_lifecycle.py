"""The receiver's lifecycle when the driver hangs or misbehaves: start and close keep their
bounds, a failure is never silent, and health says what is true once closed. Each test
fails on the code before its fix."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event import receiver as receiver_module
from hexa_event.driver import Delivery, Subscription, SubscriptionSpec
from hexa_event.errors import ReceiverFailedError
from hexa_event.runner import Service
from hexa_event.testing import Collector, eventually


class UnprintableError(Exception):
    """A driver error whose text cannot be read (its ``__str__`` raises)."""

    def __str__(self) -> str:
        raise ValueError("no text")


def hanging(conn: he.Connection, step: str) -> asyncio.Event:
    """Make the driver's ``provision`` or ``subscribe`` hang (until cancelled); the event
    is set once it was entered."""
    entered = asyncio.Event()

    async def hang(*args: Any) -> Any:
        entered.set()
        await asyncio.Event().wait()

    setattr(conn.driver, step, hang)
    return entered


def on_subscription(conn: he.Connection, change: Any) -> None:
    """Call ``change(spec, subscription)`` on each subscription the driver makes."""
    subscribe = conn.driver.subscribe

    async def changed(spec: SubscriptionSpec) -> Subscription:
        subscription = await subscribe(spec)
        change(spec, subscription)
        return subscription

    conn.driver.subscribe = changed  # type: ignore[method-assign]


async def test_a_subscription_close_that_hangs_does_not_hold_close_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # close() awaited each subscription's close with no bound: a driver whose close hangs
    # held close() (and a service's stop) for good, past the documented bound.
    monkeypatch.setattr(receiver_module, "_SUBSCRIPTION_CLOSE_TIMEOUT", 0.5)
    conn = he.connect("memory://lifecycle-close-hangs")
    closed: list[str] = []

    def change(spec: SubscriptionSpec, subscription: Subscription) -> None:
        close = subscription.close
        hangs = spec.group == "a"

        async def closing() -> None:
            nonlocal hangs
            if hangs:
                hangs = False  # the driver's own close, later, goes through
                await asyncio.Event().wait()
            await close()
            closed.append(spec.group)

        subscription.close = closing  # type: ignore[method-assign]

    on_subscription(conn, change)
    receiver = conn.receiver("svc", drain_timeout=0)
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    receiver.subscribe("d", action="b", handler=Collector().add_message)
    await receiver.start()
    began = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="hexa_event.receiver"):
        await asyncio.wait_for(receiver.close(), 10)
    assert time.monotonic() - began < 5
    assert closed == ["b"]  # the other one was closed all the same
    assert "closing the subscription of a did not end" in caplog.text
    await conn.close()


@pytest.mark.parametrize("step", ["provision", "subscribe"])
async def test_close_ends_a_start_whose_driver_hangs(step: str) -> None:
    # close() did not interrupt a provision or subscribe in progress: start() waited for it
    # for good (a broker that accepts connections and never answers).
    conn = he.connect(f"memory://lifecycle-start-{step}")
    entered = hanging(conn, step)
    receiver = conn.receiver("svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    starting = asyncio.create_task(receiver.start())
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(receiver.close(), 5)
    await asyncio.wait_for(starting, 5)
    assert receiver.health()["state"] == "closed"
    await conn.close()


@pytest.mark.parametrize("force", [False, True])
async def test_a_service_stopped_while_a_receiver_joins_stops(force: bool) -> None:
    # The runner's stop, even forced (a second SIGTERM), waited for a receiver's start
    # that hung in the driver's subscribe: the process never ended.
    conn = he.connect(f"memory://lifecycle-service-{force}")
    entered = hanging(conn, "subscribe")
    receiver = conn.receiver("svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    service = Service(receiver, gc_tuning=False)
    running = asyncio.create_task(service.run())
    await asyncio.wait_for(entered.wait(), 5)
    service.stop(force=force)
    await asyncio.wait_for(running, 10)
    assert not service.started
    await conn.close()


def refusing_settlements(conn: he.Connection) -> None:
    def change(spec: SubscriptionSpec, subscription: Subscription) -> None:
        async def settle(deliveries: Sequence[Delivery]) -> None:
            raise he.DriverError("the driver is closed", retriable=False)

        subscription.settle = settle  # type: ignore[method-assign]

    on_subscription(conn, change)


async def test_leaving_async_with_raises_when_the_receiver_failed() -> None:
    # A receiver that closed itself (it can never progress again) made run() and
    # wait_closed() raise, but `async with receiver:` ended quietly: a service written
    # that way never learned that it had stopped handling events.
    conn = he.connect("memory://lifecycle-aexit")
    refusing_settlements(conn)
    receiver = conn.receiver("svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)

    async def use() -> None:
        async with receiver:
            await conn.emitter().emit(he.Event("c", "k", {}))
            await eventually(lambda: receiver.health()["state"] == "closed", within=10)

    with pytest.raises(ReceiverFailedError, match="driver is closed"):
        await use()
    await conn.close()


async def test_an_exception_leaving_async_with_is_not_replaced_by_the_failure() -> None:
    conn = he.connect("memory://lifecycle-aexit-other")
    refusing_settlements(conn)
    receiver = conn.receiver("svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)

    async def use() -> None:
        async with receiver:
            await conn.emitter().emit(he.Event("c", "k", {}))
            await eventually(lambda: receiver.health()["state"] == "closed", within=10)
            raise KeyError("the block's own")

    with pytest.raises(KeyError):
        await use()
    await conn.close()


async def test_health_of_a_closed_receiver_has_no_action_joined_or_alive() -> None:
    # After close() every action still said joined and alive (the subscription's last
    # status), and its last lag sample stayed, so the lag gauges kept reporting a
    # consumer that had left its group.
    conn = he.connect("memory://lifecycle-health-closed")
    receiver = conn.receiver("svc", lag_interval=0.1)
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    async with receiver:
        await eventually(lambda: receiver.health()["actions"]["a"]["lag"] == 0, within=10)
        assert receiver.health()["actions"]["a"]["joined"]
    health = receiver.health()
    assert health["state"] == "closed"
    assert not health["healthy"]
    action = health["actions"]["a"]
    assert (action["joined"], action["alive"]) == (False, False)
    assert (action["lag"], action["lag_by_channel"], action["lag_age"]) == (None, {}, None)
    await conn.close()


def test_a_lag_interval_below_a_tenth_of_a_second_is_refused() -> None:
    # lag_interval=1e-9 was taken: the lag task queried the driver in a tight loop (a
    # third of a core on memory; a real broker hammered for every action).
    conn = he.connect("memory://lifecycle-lag-floor")
    with pytest.raises(he.ConfigurationError, match=r"lag_interval.*from 0\.1"):
        conn.receiver("svc", lag_interval=1e-9)
    conn.receiver("svc", lag_interval=0.1)


async def test_loops_go_on_when_a_driver_error_has_no_printable_text() -> None:
    # The fetch, settle and lag loops formatted the driver's exception with f"{exc}": one
    # whose __str__ raises killed the loop (nothing fetched, settled or sampled again).
    conn = he.connect("memory://lifecycle-unprintable")
    faults = {"fetch": 1, "settle": 1, "lag": 1}

    def change(spec: SubscriptionSpec, subscription: Subscription) -> None:
        for name in faults:
            original = getattr(subscription, name)

            def failing(*args: Any, _name: str = name, _original: Any = original) -> Any:
                if faults[_name]:
                    faults[_name] -= 1
                    raise UnprintableError()
                return _original(*args)

            async def step(*args: Any, _failing: Any = failing) -> Any:
                return await _failing(*args)

            setattr(subscription, name, step)

    on_subscription(conn, change)
    handled = Collector()
    receiver = conn.receiver("svc", lag_interval=0.1)
    receiver.subscribe("c", action="a", handler=handled.add_message)
    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        await handled.wait_for(1, within=10)
        await eventually(
            lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10, what="settled"
        )
        await eventually(
            lambda: receiver.health()["actions"]["a"]["lag_age"] is not None, within=10
        )
        health = receiver.health()
        assert health["healthy"], health["reason"]
        assert faults == {"fetch": 0, "settle": 0, "lag": 0}
    await conn.close()


async def test_health_shows_a_sub_second_stall_timeout() -> None:
    # A stall_timeout under a second read "stall_timeout 0s" in health's reason.
    conn = he.connect("memory://lifecycle-stall-text")
    release = asyncio.Event()
    receiver = conn.receiver("svc", stall_timeout=0.3)

    @receiver.subscribe("c", action="a")
    async def hangs(ctx: he.Context, msg: he.Message[Any]) -> None:
        await release.wait()

    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        await eventually(lambda: receiver.health()["actions"]["a"]["stalled"], within=10)
        assert "(stall_timeout 0.3s)" in receiver.health()["reason"]
        release.set()
    await conn.close()


def holding(name: str) -> he.Connection:
    """A memory connection whose driver cannot hold records back (as Kafka, STAN)."""
    conn = he.connect(f"memory://{name}")
    conn.driver.features = dataclasses.replace(conn.driver.features, delayed_nack=False)
    return conn


@pytest.mark.parametrize("max_wait", [1.0, 2.0])
def test_a_batch_max_wait_not_below_stall_timeout_is_refused(max_wait: float) -> None:
    # A batch filling for max_wait read as a stall once max_wait reached stall_timeout.
    receiver = he.connect("memory://lifecycle-batch-wait").receiver("svc", stall_timeout=1.0)

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        pass

    with pytest.raises(he.ConfigurationError, match=r"max_wait \(\d\.?\d*s\).*stall_timeout"):
        receiver.subscribe("c", action="a", batch=he.Batch(max_wait=max_wait), handler=handle)
    receiver.subscribe("c", action="b", batch=he.Batch(max_wait=0.9), handler=handle)


async def test_closing_a_batch_handler_gives_back_the_events_behind_a_held_one_unrun() -> None:
    # As for single handlers: close() gave a held scheduled event back, then handed the
    # later events of its key to the batch handler during the drain, ahead of it.
    conn = holding("lifecycle-batch-close-held")
    receiver = conn.receiver("svc")
    ran: list[str] = []

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        ran.extend(m.id for m in msgs)

    receiver.subscribe("c", action="a", batch=he.Batch(max_wait=0.01), handler=handle)
    emitter = conn.emitter()
    await receiver.start()
    await emitter.emit(he.Event("c", "k", {}, delay=600.0))
    await emitter.emit(he.Event("c", "k", {}))
    await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 2, within=5)
    await receiver.close()
    assert ran == []
    await conn.close()


async def test_closing_a_batch_handler_gives_back_the_events_behind_an_in_place_retry() -> None:
    conn = he.connect("memory://lifecycle-batch-close-in-place")
    receiver = conn.receiver("svc")
    ran: list[str] = []

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        ran.extend(m.id for m in msgs)
        if any(m.payload["fails"] for m in msgs):
            raise RuntimeError("fails: retried in place")

    receiver.subscribe(
        "c",
        action="a",
        batch=he.Batch(max_wait=0.01),
        retry=he.RetryPolicy(in_place=True, initial_delay=600),
        handler=handle,
    )
    emitter = conn.emitter()
    await receiver.start()
    first = await emitter.emit(he.Event("c", "k", {"fails": True}))
    await eventually(lambda: ran == [first], within=5, what="the first run")
    await emitter.emit(he.Event("c", "k", {"fails": False}))
    await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 2, within=5)
    await receiver.close()
    assert ran == [first]
    await conn.close()


async def test_a_batch_in_place_retry_backing_off_is_not_a_stall_nor_what_waits_on_it() -> None:
    # The batch path lacked what the single path got: after an in-place retry's back-off
    # the retried event and those of its key behind it kept their fetch time as stall
    # clock, and during it the other messages of its batch (waiting for it) counted.
    conn = he.connect("memory://lifecycle-batch-in-place-stall")
    receiver = conn.receiver("svc", stall_timeout=0.5)
    second_run, release = asyncio.Event(), asyncio.Event()
    batches: list[list[str]] = []

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        batches.append([m.key for m in msgs])
        for msg in msgs:
            if msg.key == "k" and msg.payload["fails"]:
                if msg.attempt == 1:
                    raise he.BatchFailed({msgs.index(msg): RuntimeError("retried in place")})
                second_run.set()
                await release.wait()

    receiver.subscribe(
        "c",
        action="a",
        batch=he.Batch(max_size=10, max_wait=0.2),
        retry=he.RetryPolicy(in_place=True, initial_delay=2.0),
        handler=handle,
    )
    emitter = conn.emitter()
    async with receiver:
        try:
            await emitter.emit_many(
                [he.Event("c", "k", {"fails": True}), he.Event("c", "other", {"fails": False})]
            )
            await eventually(lambda: len(batches) == 1, within=5, what="the first batch")
            await emitter.emit(he.Event("c", "k", {"fails": False}))  # queued behind its key
            backing_off_until = time.monotonic() + 2.0
            while time.monotonic() < backing_off_until - 0.4:  # well past stall_timeout
                health = receiver.health()
                assert health["healthy"], health["reason"]
                await asyncio.sleep(0.02)
            await asyncio.wait_for(second_run.wait(), 5)
            health = receiver.health()  # the retry and what waits on it start their clocks now
            assert health["healthy"], health["reason"]
        finally:
            release.set()
        await eventually(lambda: len(batches) == 3, within=5, what="the key's next event")
    await conn.close()


async def test_events_behind_a_held_event_of_their_batch_key_start_their_clock_when_due() -> None:
    # In the batch path, when an event held until due fell due, the events of its key
    # queued behind it kept their fetch time: the batch running them read as a stall.
    conn = holding("lifecycle-batch-held-clock")
    receiver = conn.receiver("svc", stall_timeout=0.5)
    running, release = asyncio.Event(), asyncio.Event()

    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        running.set()
        await release.wait()

    receiver.subscribe("c", action="a", batch=he.Batch(max_wait=0.05), handler=handle)
    emitter = conn.emitter()
    async with receiver:
        try:
            await emitter.emit(he.Event("c", "k", {}, delay=1.5))
            await emitter.emit(he.Event("c", "k", {}))
            await asyncio.wait_for(running.wait(), 10)
            health = receiver.health()
            assert health["healthy"], health["reason"]
        finally:
            release.set()
        await eventually(lambda: receiver.health()["actions"]["a"]["handled"] == 2, within=5)
    await conn.close()
