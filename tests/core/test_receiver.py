"""Receiver and dispatch behaviour on the memory driver: the parts the suite does not cover."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event.connect import wrap
from hexa_event.errors import ClosedError, ConfigurationError, UnknownSchemeError
from hexa_event.testing import Collector, eventually


def memory() -> he.Connection:
    return he.connect(f"memory://{uuid.uuid4().hex}")


async def test_middlewares_run_first_listed_outermost() -> None:
    driver = memory()
    trail: list[str] = []

    def tag(name: str) -> he.Middleware:
        def wrap(handler: he.Handler) -> he.Handler:
            async def run(ctx: he.Context, msg: he.Message[Any]) -> None:
                trail.append(f"{name}>")
                await handler(ctx, msg)
                trail.append(f"<{name}")

            return run

        return wrap

    done = Collector()
    receiver = driver.receiver("svc", middlewares=[tag("a"), tag("b")])

    @receiver.subscribe("c", action="act")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        trail.append("handler")
        done.add(1)

    async with receiver:
        await driver.emitter().emit(he.Event("c", "k", {}))
        await done.wait_for(1, within=5)
    assert trail == ["a>", "b>", "handler", "<b", "<a"]


async def test_sync_handlers_run_off_the_event_loop() -> None:
    driver = memory()
    threads = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="act")
    def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        threads.add(threading.current_thread() is threading.main_thread())

    async with receiver:
        await driver.emitter().emit(he.Event("c", "k", {}))
        assert await threads.wait_for(1, within=5) == [False]


async def test_in_place_retry_holds_only_its_key_and_keeps_order() -> None:
    driver = memory()
    seen: list[tuple[str, int, int]] = []
    done = Collector()
    receiver = driver.receiver("svc")
    policy = he.RetryPolicy(max_retries=2, initial_delay=0.05, in_place=True)

    @receiver.subscribe("c", action="act", retry=policy)
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        seen.append((msg.key, msg.payload["n"], msg.attempt))
        if msg.key == "slow" and msg.payload["n"] == 0 and msg.attempt == 1:
            raise RuntimeError("once")
        done.add(msg.payload["n"])

    async with receiver:
        await driver.emitter().emit_many(
            [he.Event("c", "slow", {"n": 0}), he.Event("c", "slow", {"n": 1})]
            + [he.Event("c", "fast", {"n": 10 + i}) for i in range(3)]
        )
        await done.wait_for(5, within=5)
    slow = [(n, a) for key, n, a in seen if key == "slow"]
    assert slow == [(0, 1), (0, 2), (1, 1)]
    fast_done_at = max(i for i, (key, _, _) in enumerate(seen) if key == "fast")
    slow_retry_at = seen.index(("slow", 0, 2))
    assert fast_done_at < slow_retry_at, "a held key must not block other keys"


async def test_a_key_has_one_lane_per_channel_its_retry_copies_included() -> None:
    """Events of one key wait for each other on one channel only: a key blocked on the first
    subscribed channel holds neither its events on another channel nor its retry copies
    (held by the core until due, on a driver that cannot hold them back), and each channel
    keeps its key's order. The receiver names the first channel's lanes by the key alone."""
    driver = memory()
    driver.driver.features = dataclasses.replace(driver.driver.features, delayed_nack=False)
    ran: list[tuple[str, str, int]] = []
    release = asyncio.Event()
    receiver = driver.receiver("svc")
    policy = he.RetryPolicy(max_retries=1, initial_delay=0.3)

    @receiver.subscribe(["c", "d"], action="a", retry=policy)
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        ran.append((msg.delivered_from, msg.key, msg.payload["n"]))
        if msg.payload["n"] == 0 and msg.attempt == 1:
            raise RuntimeError("retried on a.retry.1")
        if msg.payload["n"] == 2:
            await release.wait()  # holds key k of channel c

    emitter = driver.emitter()
    async with receiver:
        await emitter.emit_many(he.Event("c", "k", {"n": n}) for n in range(4))
        await emitter.emit_many(he.Event("d", "k", {"n": 10 + n}) for n in range(3))
        await eventually(
            lambda: ("a.retry.1", "k", 0) in ran and ("d", "k", 12) in ran,
            within=10,
            what="the retry copy and the other channel's events while c's k waits",
        )
        assert ("c", "k", 3) not in ran, "an event ran past the one blocking its key"
        release.set()
        await eventually(lambda: ("c", "k", 3) in ran, within=5, what="the rest of c's k")
    assert [n for channel, _, n in ran if channel == "c"] == [0, 1, 2, 3]
    assert [n for channel, _, n in ran if channel == "d"] == [10, 11, 12]
    await driver.close()


async def test_subscribe_refuses_bad_arguments_with_advice() -> None:
    receiver = memory().receiver("svc")
    with pytest.raises(ConfigurationError, match="action"):
        receiver.subscribe("c", action="")
    with pytest.raises(ConfigurationError, match="needs a channel"):
        receiver.subscribe(action="a")
    with pytest.raises(ConfigurationError, match="regular expression"):
        receiver.subscribe(pattern="(", action="a")
    receiver.subscribe("c", action="dup", handler=lambda c, m: None)
    with pytest.raises(ConfigurationError, match="already subscribed"):
        receiver.subscribe("c", action="dup", handler=lambda c, m: None)
    with pytest.raises(ConfigurationError, match="no subscriptions"):
        await memory().receiver("empty").start()


async def test_closed_driver_and_receiver_say_so() -> None:
    driver = memory()
    receiver = driver.receiver("svc")
    receiver.subscribe("c", action="a", handler=lambda c, m: None)
    await receiver.start()
    await receiver.close()
    with pytest.raises(ClosedError):
        await receiver.start()
    await driver.close()
    await driver.close()
    with pytest.raises(ClosedError):
        await driver.emitter().emit(he.Event("c", "k", {}))


def test_connect_lists_known_schemes_for_unknown_ones() -> None:
    with pytest.raises(UnknownSchemeError, match="kafka"):
        he.connect("amqp://localhost")
    with pytest.raises(ConfigurationError, match="URL"):
        he.connect("localhost:9092")
    with pytest.raises(ConfigurationError, match="partitions"):
        he.connect("memory://x", bogus=1)


async def test_run_returns_after_close_from_elsewhere() -> None:
    driver = memory()
    receiver = driver.receiver("svc")
    receiver.subscribe("c", action="a", handler=lambda c, m: None)
    task = asyncio.create_task(receiver.run())
    await asyncio.sleep(0)
    await receiver.close()
    await asyncio.wait_for(task, 5)


async def test_handler_sees_broker_message_and_dedup_keys_in_context_get() -> None:
    driver = memory()
    got = Collector()
    receiver = driver.receiver("svc")
    receiver.subscribe("c", action="a", handler=lambda c, m: got.add(c))
    async with receiver:
        event_id = await driver.emitter().emit(he.Event("c", "k", {}))
        [ctx] = await got.wait_for(1, within=5)
    assert ctx.get(he.HEXA_EVENT_ID) == event_id
    assert ctx.get(he.HEXA_EVENT_HANDLER_ACTION_NAME) == "a"
    assert ctx.get(he.HEXA_ROOT_EVENT_ID) == event_id
    assert ctx.get(he.HEXA_ROOT_EVENT_HANDLER_ACTION_NAME) == "a"


class FlakyFetchDriver(he.Driver):
    """Wraps a memory driver; its subscriptions fail to fetch while ``down`` is set."""

    features = he.Features(name="flaky", persistent=False)

    def __init__(self) -> None:
        self.inner = memory()
        self.down = True
        self.fetch_calls = 0

    async def publish(self, records: Any) -> None:
        await self.inner.publish(records)

    async def subscribe(self, spec: he.SubscriptionSpec) -> he.Subscription:
        inner = await self.inner.subscribe(spec)
        outer = self

        class Flaky(he.Subscription):
            async def fetch(self, max_count: int) -> Any:
                outer.fetch_calls += 1
                if outer.down:
                    raise he.DriverError("broker unreachable: connection refused")
                return await inner.fetch(max_count)

            async def settle(self, deliveries: Any) -> None:
                await inner.settle(deliveries)

            async def close(self) -> None:
                await inner.close()

        return Flaky()

    async def close(self) -> None:
        await self.inner.close()


async def test_unreachable_broker_backs_off_reports_and_recovers() -> None:
    flaky = FlakyFetchDriver()
    driver = wrap(flaky)
    got = Collector()
    receiver = driver.receiver("svc")
    receiver.subscribe("c", action="a", handler=lambda c, m: got.add(m.payload))
    assert receiver.health()["state"] == "new"
    async with receiver:
        await eventually(lambda: flaky.fetch_calls >= 3, within=5, what="fetch retries")
        health = receiver.health()
        assert not health["healthy"]
        assert "connection refused" in health["actions"]["a"]["fetch_error"]
        calls_before = flaky.fetch_calls
        await asyncio.sleep(0.3)  # measuring the back-off itself: no busy loop
        assert flaky.fetch_calls - calls_before <= 3
        flaky.down = False
        await driver.emitter().emit(he.Event("c", "k", {"n": 1}))
        assert await got.wait_for(1, within=10) == [{"n": 1}]
        assert receiver.health()["healthy"]
        await eventually(
            lambda: receiver.health()["actions"]["a"]["handled"] == 1, within=5, what="count"
        )
    assert receiver.health()["state"] == "closed"


async def test_retry_back_off_does_not_hold_handler_slots() -> None:
    """With one handler slot, events keep flowing while failed ones wait out their back-off."""
    driver = memory()
    done = Collector()
    receiver = driver.receiver("svc", concurrency=1)
    policy = he.RetryPolicy(max_retries=1, initial_delay=3600)

    @receiver.subscribe("c", action="a", retry=policy)
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.payload["fail"]:
            raise RuntimeError("retry me much later")
        done.add(msg.key)

    async with receiver:
        emitter = driver.emitter()
        await emitter.emit_many(he.Event("c", f"bad{i}", {"fail": True}) for i in range(20))
        await emitter.emit_many(he.Event("c", f"good{i}", {"fail": False}) for i in range(20))
        await done.wait_for(20, within=10)
        await eventually(
            lambda: receiver.health()["actions"]["a"]["retried"] == 20, within=5, what="retries"
        )


async def test_another_actions_copies_start_a_fresh_count_for_this_action() -> None:
    """A dead letter read by an operator's handler is that handler's attempt 1, and its
    dedup keys name the operator's action, not the action that failed."""
    driver = memory()
    seen = Collector()
    receiver = driver.receiver("svc")
    receiver.subscribe(
        "orders",
        action="export",
        retry=he.RetryPolicy(max_retries=1, initial_delay=0.01),
        handler=lambda c, m: (_ for _ in ()).throw(RuntimeError("down")),
    )

    @receiver.subscribe(
        he.dead_letter_channel("export"),
        action="ops",
        retry=he.RetryPolicy(max_retries=1, initial_delay=0.01),
    )
    async def ops(ctx: he.Context, msg: he.Message[Any]) -> None:
        seen.add((msg.attempt, ctx.handler_action, ctx.root_handler_action, ctx.root_event_id))
        if msg.attempt == 1:
            raise RuntimeError("ops handler hiccup")

    async with receiver:
        event_id = await driver.emitter().emit(he.Event("orders", "k", {}))
        items = await seen.wait_for(2, within=10)
    assert items == [(1, "ops", "ops", event_id), (2, "ops", "ops", event_id)]
