"""The receiver's promise when work cannot progress: it settles and goes on, or says so in
``health()`` (or fails, when it never can again). Each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.driver import Delivery, Subscription, SubscriptionSpec
from hexa_event.errors import ReceiverFailedError
from hexa_event.publishing import Publication, PublishCall
from hexa_event.testing import Collector, eventually


def holding(name: str) -> he.Connection:
    """A memory connection whose driver cannot hold records back (as Kafka, STAN): the core
    holds a scheduled event, and later events of its key wait behind it."""
    conn = he.connect(f"memory://{name}")
    conn.driver.features = dataclasses.replace(conn.driver.features, delayed_nack=False)
    return conn


async def test_a_settlement_the_driver_cannot_write_fails_the_receiver() -> None:
    # The settle loop retried a DriverError(retriable=False) forever: health said "cannot
    # write settlements", the window filled, and run()/wait_closed() never returned.
    conn = he.connect("memory://progress-settle")
    subscribe = conn.driver.subscribe

    async def refusing(spec: SubscriptionSpec) -> Subscription:
        subscription = await subscribe(spec)

        async def settle(deliveries: Sequence[Delivery]) -> None:
            raise he.DriverError("the driver is closed", retriable=False)

        subscription.settle = settle  # type: ignore[method-assign]
        return subscription

    conn.driver.subscribe = refusing  # type: ignore[method-assign]
    receiver = conn.receiver("svc")
    receiver.subscribe("c", action="a", handler=Collector().add_message)
    await receiver.start()
    await conn.emitter().emit(he.Event("c", "k", {}))
    with pytest.raises(ReceiverFailedError, match=r"cannot write settlements.*driver is closed"):
        await asyncio.wait_for(receiver.wait_closed(), 10)
    health = receiver.health()
    assert not health["healthy"]
    assert "the driver is closed" in health["reason"]
    await conn.close()


async def test_a_full_room_of_held_events_says_why_nothing_else_is_fetched() -> None:
    # Once the events held until due filled the action's room, fetching stopped and every
    # other key waited (as documented), while health() still said healthy.
    conn = holding("progress-held-full")
    handled = Collector()
    receiver = conn.receiver("svc", concurrency=1)  # a window of 256: 1,024 held at most
    receiver.subscribe("c", action="a", handler=handled.add_message)
    emitter = conn.emitter()
    async with receiver:
        await emitter.emit_many([he.Event("c", f"k{n}", {}, delay=600.0) for n in range(1024 + 50)])
        await emitter.emit(he.Event("c", "other", {}))
        await eventually(lambda: receiver.health()["actions"]["a"]["waiting"] >= 1024, within=10)
        health = receiver.health()
        assert not health["healthy"]
        waiting = health["actions"]["a"]["waiting"]
        assert f"{waiting} events wait for their due time" in health["reason"]
        assert "every other key wait" in health["reason"]
        assert "concurrency" in health["reason"]
    await conn.close()


async def test_events_behind_a_held_event_of_their_key_are_not_a_stall() -> None:
    # An event queued behind a scheduled event of its key (held by the core until due) kept
    # its fetch time as stall clock: health said "a handler hangs" past stall_timeout, so a
    # liveness probe restarted a healthy consumer (which then read both again).
    conn = holding("progress-held-key")
    receiver = conn.receiver("svc", stall_timeout=0.5)
    order: list[str] = []
    first_runs, release = asyncio.Event(), asyncio.Event()
    scheduled = ""

    @receiver.subscribe("c", action="a")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.id == scheduled:
            first_runs.set()
            await release.wait()
        order.append(msg.id)

    emitter = conn.emitter()
    async with receiver:
        scheduled = await emitter.emit(he.Event("c", "k", {}, delay=2.0))
        due = time.time() + 2.0
        behind = await emitter.emit(he.Event("c", "k", {}))
        while time.time() < due - 0.4:  # well past stall_timeout, before due
            health = receiver.health()
            assert health["healthy"], health["reason"]
            await asyncio.sleep(0.02)
        await asyncio.wait_for(first_runs.wait(), 5)
        health = receiver.health()  # the one behind waited until now: no stall either
        assert health["healthy"], health["reason"]
        release.set()
        await eventually(lambda: len(order) == 2, within=5, what="both events")
        assert order == [scheduled, behind]
    await conn.close()


async def test_a_retry_publish_raising_cancelled_error_gives_the_event_back() -> None:
    # A publish middleware (or a driver) raising CancelledError of its own while a retry
    # copy was sent killed the worker: health said "a handler worker stopped", that key
    # never ran again and, with one worker, neither did any other.
    conn = he.connect("memory://progress-publish-cancelled")
    refused = 0

    def cancelling_once(publish: PublishCall) -> PublishCall:
        async def call(publication: Publication) -> None:
            nonlocal refused
            if publication.purpose == "retry" and not refused:
                refused += 1
                raise asyncio.CancelledError  # not a cancellation of the caller
            await publish(publication)

        return call

    receiver = conn.receiver("svc", concurrency=1, publish_middlewares=[cancelling_once])
    handled = Collector()
    attempts: dict[str, int] = {}

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(initial_delay=0.05))
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        attempts[msg.id] = attempts.get(msg.id, 0) + 1
        if msg.key == "fails" and attempts[msg.id] == 1:
            raise RuntimeError("first run fails")
        await handled.add_message(ctx, msg)

    emitter = conn.emitter()
    async with receiver:
        failing = await emitter.emit(he.Event("c", "fails", {}))
        await eventually(lambda: refused == 1, within=5, what="the refused retry copy")
        other = await emitter.emit(he.Event("c", "other", {}))
        await handled.wait_for(2, within=10)
        assert {m.id for m in handled.items} == {failing, other}
        health = receiver.health()["actions"]["a"]
        assert health["alive"], health["problems"]
        assert health["republish_failures"] == 1
    await conn.close()


async def test_a_permanent_predicate_raising_cancelled_error_keeps_the_worker() -> None:
    # Any CancelledError of its own from the settling of a failure (here the permanent-error
    # predicate) killed the worker as the publish's did.
    conn = he.connect("memory://progress-predicate-cancelled")
    asked = 0

    def permanent(exc: BaseException) -> bool:
        nonlocal asked
        asked += 1
        if asked == 1:
            raise asyncio.CancelledError  # not a cancellation of the caller
        return False

    receiver = conn.receiver("svc", concurrency=1)
    handled = Collector()
    attempts: dict[str, int] = {}

    @receiver.subscribe("c", action="a", permanent=permanent)
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        attempts[msg.id] = attempts.get(msg.id, 0) + 1
        if msg.key == "fails" and attempts[msg.id] == 1:
            raise RuntimeError("first run fails")
        await handled.add_message(ctx, msg)

    emitter = conn.emitter()
    async with receiver:
        failing = await emitter.emit(he.Event("c", "fails", {}))
        await eventually(lambda: asked == 1, within=5, what="the predicate")
        other = await emitter.emit(he.Event("c", "other", {}))
        await handled.wait_for(2, within=10)
        assert {m.id for m in handled.items} == {failing, other}
        health = receiver.health()
        assert health["healthy"], health["reason"]
    await conn.close()


@pytest.mark.parametrize(
    "option", ["concurrency", "drain_timeout", "stall_timeout", "lag_interval"]
)
@pytest.mark.parametrize(
    "value", [-1, float("nan"), float("inf"), -float("inf"), 10**400, True, "5", None]
)
def test_absurd_receiver_options_are_refused_naming_them(option: str, value: Any) -> None:
    with pytest.raises(he.ConfigurationError, match=option):
        he.connect("memory://").receiver("svc", **{option: value})


@pytest.mark.parametrize("option", ["concurrency", "stall_timeout", "lag_interval"])
def test_zero_is_refused_where_it_would_stop_the_receiver(option: str) -> None:
    with pytest.raises(he.ConfigurationError, match=option):
        he.connect("memory://").receiver("svc", **{option: 0})


@pytest.mark.parametrize("value", [0, -1, 10**400, 10_001, 2.5, float("nan"), True])
def test_absurd_subscription_concurrency_is_refused(value: Any) -> None:
    receiver = he.connect("memory://").receiver("svc")
    with pytest.raises(he.ConfigurationError, match="concurrency"):
        receiver.subscribe("c", action="a", concurrency=value, handler=Collector().add_message)


async def test_subscribe_after_close_says_the_receiver_is_closed() -> None:
    # A closed receiver refused a subscription saying it "already runs" (or, closed before
    # it started, took it, and only start() said it was closed).
    started = he.connect("memory://").receiver("svc")
    started.subscribe("c", action="a", handler=Collector().add_message)
    await started.start()
    await started.close()
    never = he.connect("memory://").receiver("svc")
    await never.close()
    for receiver in (started, never):
        with pytest.raises(he.ClosedError, match="closed; make a new one"):
            receiver.subscribe("c", action="b", handler=Collector().add_message)


async def test_a_sync_handler_raising_generator_exit_fails_its_event_and_keeps_the_worker() -> None:
    # A task awaiting a future that holds GeneratorExit has it thrown in: Python closes
    # every coroutine the task awaits through and raises it in the task's own coroutine.
    # The event was dead-lettered, then the worker ended ("a handler worker stopped"):
    # with one worker, nothing more was handled.
    conn = he.connect("memory://progress-generator-exit")
    receiver = conn.receiver("svc", concurrency=1)
    handled, letters = Collector(), Collector()

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(max_retries=0))
    def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.key == "bad":
            raise GeneratorExit
        handled.add(msg)

    receiver.subscribe("a.dlq", action="reader", handler=letters.add_message)
    async with receiver:
        await conn.emitter().emit(he.Event("c", "bad", {}))
        (letter,) = await letters.wait_for(1, within=10)
        await conn.emitter().emit(he.Event("c", "good", {}))
        await handled.wait_for(1, within=10)
        health = receiver.health()
        assert health["healthy"], health["reason"]
    assert letter.headers[env.ERROR_TYPE] == b"RuntimeError"
    assert b"GeneratorExit" in letter.headers[env.ERROR_MESSAGE]
    await conn.close()


async def test_retry_copies_that_cannot_be_published_make_health_say_so() -> None:
    # Every retry copy refused (an ACL, a retry topic deleted with provisioning off): the
    # failing events went round, given back and redelivered, for ever, while health()
    # said healthy and had no republish_failures (docs/middleware.md promises it).
    conn = he.connect("memory://progress-republish")
    refusing = True

    def refuse_retries(publish: PublishCall) -> PublishCall:
        async def call(publication: Publication) -> None:
            if refusing and publication.purpose == "retry":
                raise he.DriverError("not authorized to write a.retry.1")
            await publish(publication)

        return call

    receiver = conn.receiver("svc", publish_middlewares=[refuse_retries])

    @receiver.subscribe("c", action="a")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        raise RuntimeError("fails")

    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        await eventually(lambda: not receiver.health()["healthy"], within=10, what="unhealthy")
        health = receiver.health()
        assert "cannot publish retry copies" in health["reason"]
        assert "not authorized to write a.retry.1" in health["reason"]
        assert health["actions"]["a"]["republish_failures"] >= 1
        refusing = False  # the event comes back within the back-off and its copy goes out
        await eventually(lambda: receiver.health()["healthy"], within=10, what="healthy again")
        assert receiver.health()["actions"]["a"]["publish_error"] == ""
    await conn.close()


async def test_health_clears_once_the_events_given_back_are_handled() -> None:
    # The outage that refused the copies ends and the redelivered events now succeed: no
    # copy is published again, so health kept "cannot publish" for 60 s after recovery.
    conn = he.connect("memory://progress-republish-over")
    refusing = True
    seen: set[str] = set()

    def refuse_retries(publish: PublishCall) -> PublishCall:
        async def call(publication: Publication) -> None:
            if refusing and publication.purpose == "retry":
                raise he.DriverError("the broker is away")
            await publish(publication)

        return call

    receiver = conn.receiver("svc", publish_middlewares=[refuse_retries])
    handled = Collector()

    @receiver.subscribe("c", action="a")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.id not in seen:
            seen.add(msg.id)
            raise RuntimeError("fails once")
        handled.add(msg)

    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        await eventually(lambda: not receiver.health()["healthy"], within=10, what="unhealthy")
        refusing = False
        await handled.wait_for(1, within=10)
        health = receiver.health()
        assert health["healthy"], health["reason"]
    await conn.close()


class DeclinedError(Exception):
    """A failure the handler means to be permanent."""


async def test_one_exception_type_as_permanent_is_that_type_not_every_exception() -> None:
    # permanent=DeclinedError (one type, not a tuple) was called as a predicate: DeclinedError(exc)
    # is truthy, so every failure was dead-lettered at once, without a retry.
    conn = he.connect("memory://progress-permanent-type")
    receiver = conn.receiver("svc")
    handled = Collector()
    attempts = 0

    @receiver.subscribe(
        "c", action="a", permanent=DeclinedError, retry=he.RetryPolicy(initial_delay=0.05)
    )
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("a passing failure")
        await handled.add_message(ctx, msg)

    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        (msg,) = await handled.wait_for(1, within=10)
        assert msg.attempt == 2
        assert receiver.health()["actions"]["a"]["dead_lettered"] == 0
    await conn.close()


@pytest.mark.parametrize("permanent", [["ValueError"], ("ValueError",), 42, (ValueError, int)])
def test_permanent_that_is_neither_exception_types_nor_a_function_is_refused(
    permanent: Any,
) -> None:
    # A list of names or a number was accepted, then raised inside every failure's
    # handling (logged each time) and counted nothing as permanent.
    receiver = he.connect("memory://").receiver("svc")
    with pytest.raises(he.ConfigurationError, match="permanent"):
        receiver.subscribe("c", action="a", permanent=permanent)


@pytest.mark.parametrize(("option", "value"), [("retry", 0), ("retry", 3), ("pattern", 5)])
def test_retry_or_pattern_of_the_wrong_type_is_refused_naming_it(option: str, value: Any) -> None:
    # retry=0 (meant: no retries) silently gave the default 4 retries; retry=3 raised an
    # AttributeError from inside subscribe(), pattern=5 a TypeError from re.
    receiver = he.connect("memory://").receiver("svc")
    with pytest.raises(he.ConfigurationError, match=option):
        receiver.subscribe("c", action="a", handler=Collector().add_message, **{option: value})


async def test_closing_gives_back_the_events_behind_a_held_event_of_their_key_unrun() -> None:
    # Where the core holds a scheduled event and its key's later events wait behind it
    # (Kafka, STAN), close() gave the held one back and then ran the later ones during
    # the drain: they were handled before it, against the key's order.
    conn = holding("progress-close-held")
    receiver = conn.receiver("svc")
    ran: list[str] = []
    receiver.subscribe("c", action="a", handler=lambda ctx, msg: ran.append(msg.id))
    emitter = conn.emitter()
    await receiver.start()
    await emitter.emit(he.Event("c", "k", {}, delay=600.0))
    await emitter.emit(he.Event("c", "k", {}))
    await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 2, within=5)
    await receiver.close()
    assert ran == []
    await conn.close()


async def test_closing_gives_back_the_events_behind_an_in_place_retry_unrun() -> None:
    # RetryPolicy(in_place=True) holds a failing event's key so its events stay in order;
    # close() cut the retry's back-off and gave it back, then ran the key's next event
    # during the drain, before it: the order in_place promises was broken.
    conn = he.connect("memory://progress-close-in-place")
    receiver = conn.receiver("svc")
    ran: list[str] = []

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(in_place=True, initial_delay=600))
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        ran.append(msg.id)
        if msg.payload["fails"]:
            raise RuntimeError("fails: retried in place")

    emitter = conn.emitter()
    await receiver.start()
    first = await emitter.emit(he.Event("c", "k", {"fails": True}))
    await emitter.emit(he.Event("c", "k", {"fails": False}))
    await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 2, within=5)
    await eventually(lambda: ran == [first], within=5, what="the first run")
    await receiver.close()
    assert ran == [first]
    await conn.close()


async def test_a_plain_function_returning_a_coroutine_has_it_run_before_the_ack() -> None:
    # handler=lambda ctx, msg: save(msg), with an async save: the lambda is not a coroutine
    # function, so it ran on a worker thread and returned save's coroutine, which nobody
    # awaited: the event was acked and counted handled, and save never ran.
    conn = he.connect("memory://progress-lambda")
    receiver = conn.receiver("svc")
    saved = Collector()

    async def save(msg: he.Message[Any]) -> None:
        await asyncio.sleep(0)
        saved.add(msg.id)

    receiver.subscribe("c", action="a", handler=lambda ctx, msg: save(msg))
    async with receiver:
        sent = await conn.emitter().emit(he.Event("c", "k", {}))
        assert await saved.wait_for(1, within=10) == [sent]
        await eventually(lambda: receiver.health()["actions"]["a"]["handled"] == 1, within=5)
    await conn.close()


async def test_an_in_place_retry_backing_off_is_not_a_stall_nor_are_the_events_behind_it() -> None:
    # RetryPolicy(in_place=True) waits out its back-off holding the event and its key. The
    # event and those behind it kept their fetch time as stall clock: a back-off longer
    # than stall_timeout read as "a handler hangs", and a liveness probe restarted the
    # consumer, which began the retries again from the first: never dead-lettered.
    conn = he.connect("memory://progress-in-place-stall")
    receiver = conn.receiver("svc", stall_timeout=0.5)
    ran: list[str] = []
    second_run, release = asyncio.Event(), asyncio.Event()

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(in_place=True, initial_delay=2.0))
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        ran.append(msg.id)
        if msg.payload["fails"]:
            if msg.attempt == 1:
                raise RuntimeError("fails once: retried in place")
            second_run.set()
            await release.wait()

    emitter = conn.emitter()
    async with receiver:
        first = await emitter.emit(he.Event("c", "k", {"fails": True}))
        behind = await emitter.emit(he.Event("c", "k", {"fails": False}))
        backing_off_until = time.monotonic() + 2.0
        while time.monotonic() < backing_off_until - 0.4:  # well past stall_timeout
            health = receiver.health()
            assert health["healthy"], health["reason"]
            await asyncio.sleep(0.02)
        await asyncio.wait_for(second_run.wait(), 5)
        health = receiver.health()  # the retry and the one behind it start their clocks now
        assert health["healthy"], health["reason"]
        release.set()
        await eventually(lambda: ran == [first, first, behind], within=5, what="all runs")
    await conn.close()
