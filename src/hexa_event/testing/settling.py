"""Conformance checks of the settle-everything invariant and of truthful health.

Whatever a record holds and whatever a handler or the driver does, every delivery ends
acked, dead-lettered or given back, the settlement is written (retried until it is), and
``receiver.health()`` says unhealthy with the reason whenever work cannot progress.
:class:`~hexa_event.testing.conformance.DriverConformance` inherits these checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from .. import envelope as env
from ..connect import wrap
from ..context import Context
from ..driver import Delivery, Driver, RawRecord, Subscription, SubscriptionSpec
from ..errors import DriverError, ReceiverFailedError
from ..event import Event, Message
from ..receiver import Receiver
from ..retry import RetryPolicy, dead_letter_channel
from .contract import ContractConformance, DriverPool
from .waiting import Collector, eventually

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.05, coefficient=2.0)


class Interrupt(BaseException):
    """What a misbehaving handler may raise: not an Exception."""


class FailingSettle(Driver):
    """Wraps a driver; while ``failing`` is set, every ``settle`` raises DriverError."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.features = inner.features
        self.failing = True
        self.failed_calls = 0

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await self.inner.publish(records)

    async def provision(self, channels: Sequence[str]) -> None:
        await self.inner.provision(channels)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        return _FailingSettleSubscription(self, await self.inner.subscribe(spec))

    async def close(self) -> None:
        await self.inner.close()


class _FailingSettleSubscription(Subscription):
    def __init__(self, owner: FailingSettle, inner: Subscription) -> None:
        self._owner = owner
        self._inner = inner

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self._inner.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        if self._owner.failing:
            self._owner.failed_calls += 1
            raise DriverError("settlement store unavailable (injected by the test)")
        await self._inner.settle(deliveries)

    async def close(self) -> None:
        await self._inner.close()


class SettlementConformance(ContractConformance):
    """The settle-everything checks; shared helpers for the suites built on it."""

    async def started(self, pool: DriverPool, receiver: Receiver) -> Receiver:
        pool.closing(receiver.close)
        await receiver.start()
        return receiver

    async def dead_letters(self, pool: DriverPool, action: str) -> Collector:
        """Read the action's dead-letter channel raw, through the driver contract alone."""
        driver = await pool.new()
        subscription = await driver.subscribe(
            SubscriptionSpec(group=f"{action}-dlq-watch", channels=(dead_letter_channel(action),))
        )
        letters = Collector()

        async def read() -> None:
            while deliveries := await subscription.fetch(100):
                for delivery in deliveries:
                    letters.add(delivery.record)
                    delivery.ack()
                await subscription.settle(deliveries)

        task = asyncio.create_task(read())
        pool.on_close(subscription.close, task)
        return letters

    async def settled(self, receiver: Receiver, action: str) -> None:
        """Wait until nothing of ``action`` is unsettled or waiting to be written."""
        await eventually(
            lambda: receiver.health()["actions"][action]["in_flight"] == 0,
            within=self.timeout,
            what="every delivery settled and written",
        )

    # -- poison and misbehaving handlers ---------------------------------------------------------

    async def test_poison_of_every_kind_is_dead_lettered(self, pool: DriverPool) -> None:
        """Deep JSON, absurd numbers, bad text in headers: dead letters, never a stuck key."""
        driver, channel, action = await self.provisioned(pool)
        good = Collector()
        receiver = driver.receiver("svc")
        receiver.subscribe(channel, action=action, retry=FAST_RETRY, handler=good.add_message)
        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        sane = driver.emitter().seal(Event(channel, "k", {"n": 0}))
        deep = b"[" * 5000 + b"]" * 5000
        ours = {env.ROOT_ACTION: action.encode()}

        def variant(body: bytes, **headers: bytes) -> RawRecord:
            return RawRecord(channel, "k", {**sane.headers, **headers}, body)

        poison = [
            variant(deep),
            variant(sane.body, _ctx_user=b'{"_user_identifier": ' + deep + b"}"),
            variant(sane.body, **ours, HEXA_ATTEMPT=b"2", HEXA_RETRY_AT=b"9" * 400),
            variant(sane.body, **ours, HEXA_ATTEMPT=b"9" * 400),
            variant(sane.body, HEXA_EVENT_ID=b"\xff\xfe"),
            variant(sane.body, _payload_encoder=b"\xc3\x28"),
        ]
        await driver.publish(poison)
        await driver.emitter().emit(Event(channel, "k", {"n": 1}))
        await good.wait_for(1, within=self.timeout)
        received = await letters.wait_for(len(poison), within=self.timeout)
        assert [r.headers[env.DEAD_LETTER_REASON] for r in received] == [b"poison"] * len(poison)
        assert [m.payload for m in good.items] == [{"n": 1}]
        await self.settled(receiver, action)
        assert receiver.health()["healthy"], receiver.health()["reason"]

    async def test_attempts_below_one_continue_the_chain(self, pool: DriverPool) -> None:
        """A copy naming this action as root with HEXA_ATTEMPT 0 or -3 is attempt 1: its
        failure goes to retry 1, then on to the dead letter (no retry.0, no hot loop)."""
        driver, channel, action = await self.provisioned(pool)
        runs = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, retry=FAST_RETRY)
        async def fail(ctx: Context, msg: Message[Any]) -> None:
            runs.add((msg.payload["tag"], msg.attempt))
            raise RuntimeError("no")

        await self.started(pool, receiver)
        letters = await self.dead_letters(pool, action)
        for tag, attempt in (("zero", b"0"), ("negative", b"-3")):
            sealed = driver.emitter().seal(Event(channel, tag, {"tag": tag}))
            headers = {**sealed.headers, env.ROOT_ACTION: action.encode(), env.ATTEMPT: attempt}
            await driver.publish([RawRecord(channel, tag, headers, sealed.body)])
        received = await letters.wait_for(2, within=self.timeout)
        assert sorted(runs.items) == sorted(
            (tag, n) for tag in ("zero", "negative") for n in (1, 2, 3)
        )
        assert {r.headers[env.ATTEMPT] for r in received} == {b"3"}

    async def test_handler_raising_base_exceptions_is_retried(self, pool: DriverPool) -> None:
        """A BaseException or a handler's own CancelledError is a failure: retried, the key
        goes on, nothing leaks."""
        driver, channel, action = await self.provisioned(pool)
        runs = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe(channel, action=action, retry=FAST_RETRY)
        async def unruly(ctx: Context, msg: Message[Any]) -> None:
            runs.add((msg.payload["n"], msg.attempt))
            if msg.payload["n"] == 0 and msg.attempt == 1:
                raise Interrupt()
            if msg.payload["n"] == 0 and msg.attempt == 2:
                raise asyncio.CancelledError()

        await self.started(pool, receiver)
        await driver.emitter().emit_many(Event(channel, "k", {"n": n}) for n in range(3))
        await eventually(
            lambda: (0, 3) in runs.items and {(1, 1), (2, 1)} <= set(runs.items),
            within=self.timeout,
            what="retries of the unruly event and the rest of its key",
        )
        await self.settled(receiver, action)
        assert receiver.health()["healthy"], receiver.health()["reason"]

    # -- the settlement store and the driver failing -------------------------------------------

    async def test_settlement_failures_are_retried_not_dropped(self, pool: DriverPool) -> None:
        """Settlements that cannot be written are retried with back-off; health says so."""
        flaky = FailingSettle(await self.new_driver())
        driver = wrap(flaky)
        pool.closing(driver.close)
        channel, action = self.names()
        await driver.provision([channel])
        got = Collector()
        receiver = driver.receiver("svc")
        receiver.subscribe(channel, action=action, handler=got.add_message)
        await self.started(pool, receiver)
        await driver.emitter().emit_many(Event(channel, f"k{n}", {"n": n}) for n in range(20))
        await got.wait_for(20, within=self.timeout)
        await eventually(lambda: flaky.failed_calls >= 2, within=self.timeout, what="retries")
        health = receiver.health()
        assert not health["healthy"]
        assert "cannot write settlements" in health["reason"]
        assert health["actions"][action]["in_flight"] == 20
        flaky.failing = False
        await self.settled(receiver, action)
        await eventually(lambda: receiver.health()["healthy"], within=self.timeout, what="health")
        assert len(got.items) == 20

    async def test_driver_closed_under_receiver_fails_loudly(self, pool: DriverPool) -> None:
        """The driver closed under a running receiver: unhealthy with the reason, and
        wait_closed() raises instead of waiting forever."""
        driver = await self.new_driver()
        conn = wrap(driver)
        channel, action = self.names()
        await conn.provision([channel])
        receiver = conn.receiver("svc", drain_timeout=2)
        receiver.subscribe(channel, action=action, handler=lambda c, m: None)
        await self.started(pool, receiver)
        await conn.close()
        with pytest.raises(ReceiverFailedError, match="ended"):
            async with asyncio.timeout(self.timeout):
                await receiver.wait_closed()
        health = receiver.health()
        assert not health["healthy"]
        assert "ended" in health["reason"]

    async def test_stalled_handler_turns_health_unhealthy(self, pool: DriverPool) -> None:
        """A delivery unsettled past stall_timeout makes health say so, and clears after."""
        driver, channel, action = await self.provisioned(pool)
        release = asyncio.Event()
        receiver = driver.receiver("svc", stall_timeout=0.3)

        @receiver.subscribe(channel, action=action)
        async def hang(ctx: Context, msg: Message[Any]) -> None:
            await release.wait()

        await self.started(pool, receiver)
        await driver.emitter().emit(Event(channel, "k", {}))
        await eventually(
            lambda: "unsettled" in receiver.health()["reason"], within=self.timeout, what="stall"
        )
        assert not receiver.health()["healthy"]
        release.set()
        await eventually(lambda: receiver.health()["healthy"], within=self.timeout, what="health")

    # -- groups and close ------------------------------------------------------------------------

    async def test_members_started_one_after_another_share_the_work(self, pool: DriverPool) -> None:
        """Two members of one action, the second started later, both handle source events."""
        driver = await pool.new()
        if not driver.features.consumer_groups:
            pytest.skip(f"{driver.features.name} has no consumer groups")
        channel, action = self.names()
        await driver.provision([channel])
        got: dict[str, Collector] = {"a": Collector(), "b": Collector()}
        for name in ("a", "b"):
            receiver = (await pool.new()).receiver(f"svc-{name}")
            receiver.subscribe(channel, action=action, handler=got[name].add_message)
            await self.started(pool, receiver)
        count = 200 * self.scale
        ids = set(
            await driver.emitter().emit_many(
                Event(channel, f"k{n}", {"n": n}) for n in range(count)
            )
        )
        await eventually(
            lambda: {m.id for c in got.values() for m in c.items} >= ids,
            within=self.timeout,
            what="every event handled",
        )
        assert got["a"].items, "the first member handled nothing"
        assert got["b"].items, "the second member handled nothing"

    async def test_no_acked_event_comes_again_after_clean_close(self, pool: DriverPool) -> None:
        """Close while one key's handler is slow: what was acked is not handled again by the
        next member of the action (it sees each key's later events, in order, and no repeat)."""
        driver, channel, action = await self.provisioned(pool)
        keys = [f"k{n}" for n in range(8)]
        first = Collector()
        started = asyncio.Event()
        receiver = driver.receiver("svc", drain_timeout=self.timeout)

        @receiver.subscribe(channel, action=action)
        async def handle(ctx: Context, msg: Message[Any]) -> None:
            if msg.key == "k0":
                started.set()
                await asyncio.sleep(0.2)
            first.add(msg.id)

        await self.started(pool, receiver)
        emitter = driver.emitter()
        await emitter.emit_many(Event(channel, k, {"n": n}) for n in range(5) for k in keys)
        await asyncio.wait_for(started.wait(), self.timeout)
        await receiver.close()
        handled_first = set(first.items)
        sentinels = set(await emitter.emit_many(Event(channel, k, {"end": True}) for k in keys))
        second = Collector()
        again = (await pool.new()).receiver("svc-again")
        again.subscribe(channel, action=action, handler=lambda c, m: second.add(m.id))
        await self.started(pool, again)
        await eventually(
            lambda: set(second.items) >= sentinels, within=self.timeout, what="sentinels"
        )
        repeated = handled_first & set(second.items)
        assert not repeated, f"{len(repeated)} acked events were handled again after close"
