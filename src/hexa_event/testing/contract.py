"""The contract-level conformance checks: the driver contract itself, without the core.

:class:`ContractConformance` talks to a driver only through ``publish``, ``subscribe``,
``fetch``, ``ack``/``nack``, ``settle``, ``status`` and ``close``, so a driver that breaks the
contract fails here with a precise message rather than somewhere in the receiver.
:class:`~hexa_event.testing.conformance.DriverConformance` inherits these checks; checks a
driver's :class:`~hexa_event.driver.Features` rule out are skipped.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import ClassVar

import pytest

from ..connect import Connection, wrap
from ..driver import Delivery, Driver, RawRecord, Subscription, SubscriptionSpec
from ..errors import AlreadySettledError, InvalidEventError, SubscriptionBusyError


class DriverPool:
    """Makes drivers for one test and closes every one of them (and what they made) after."""

    def __init__(self, factory: Callable[[], Awaitable[Driver]]) -> None:
        self._factory = factory
        self._drivers: list[Connection] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._cleanups: list[tuple[Callable[[], Awaitable[None]], asyncio.Task[None]]] = []

    async def new(self) -> Connection:
        """A new driver (as a connection, which makes emitters and receivers)."""
        driver = wrap(await self._factory())
        self._drivers.append(driver)
        return driver

    def closing(self, close: Callable[[], Awaitable[None]]) -> None:
        """Call ``close`` at the end of the test, before the drivers close."""
        self._closers.append(close)

    def on_close(self, close: Callable[[], Awaitable[None]], task: asyncio.Task[None]) -> None:
        """Close a raw subscription and await its reader task at the end of the test."""
        self._cleanups.append((close, task))

    async def close(self) -> None:
        for close, task in self._cleanups:
            await close()
            await asyncio.gather(task, return_exceptions=True)
        for closer in self._closers:
            await closer()
        for driver in self._drivers:
            await driver.close()


class ContractConformance:
    """Subclass and implement :meth:`new_driver`; see :mod:`hexa_event.testing.conformance`."""

    timeout: ClassVar[float] = 30.0
    """Seconds any single wait may take before the test fails."""
    scale: ClassVar[int] = 1
    """Multiplies event counts; 1 keeps the whole suite well under a minute."""

    async def new_driver(self) -> Driver:
        raise NotImplementedError("return a fresh driver connected to the broker under test")

    def exclusive_options(self) -> object:
        """The driver's subscription options asking for an exclusive subscription (used when
        ``features.exclusive_subscriptions``)."""
        raise NotImplementedError("return the typed options of an exclusive subscription")

    @pytest.fixture
    async def pool(self) -> AsyncIterator[DriverPool]:
        pool = DriverPool(self.new_driver)
        try:
            yield pool
        finally:
            await pool.close()

    @staticmethod
    def names(prefix: str = "t") -> tuple[str, str]:
        """A unique channel and action for one test."""
        tag = uuid.uuid4().hex[:10]
        return f"{prefix}-{tag}", f"act-{tag}"

    async def provisioned(self, pool: DriverPool, prefix: str = "t") -> tuple[Connection, str, str]:
        """A new driver, and a unique channel (provisioned on it) and action or group name
        (:meth:`names`)."""
        driver = await pool.new()
        channel, name = self.names(prefix)
        await driver.provision([channel])
        return driver, channel, name

    async def member(
        self, pool: DriverPool, driver: Driver, group: str, *channels: str
    ) -> Subscription:
        """A raw subscription, closed at the end of the test."""
        subscription = await driver.subscribe(SubscriptionSpec(group=group, channels=channels))
        pool.closing(subscription.close)
        return subscription

    async def take(
        self, subscription: Subscription, count: int, *, within: float | None = None
    ) -> list[Delivery]:
        """Fetch until ``count`` deliveries arrived (AssertionError after the deadline)."""
        out: list[Delivery] = []
        deadline = time.monotonic() + (within if within is not None else self.timeout)
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out: {len(out)} of {count} deliveries arrived "
                    f"({[d.coordinates for d in out]})"
                )
            try:
                async with asyncio.timeout(remaining):
                    out.extend(await subscription.fetch(count - len(out)))
            except TimeoutError:
                continue
        return out

    @staticmethod
    def record(channel: str, key: str, n: int) -> RawRecord:
        return RawRecord(channel, key, {"n": str(n).encode()}, f"body-{n}".encode())

    @staticmethod
    def numbers(deliveries: Sequence[Delivery]) -> list[int]:
        return [int(d.record.headers["n"]) for d in deliveries]

    # -- the checks ------------------------------------------------------------------------------

    async def test_contract_publish_fetch_ack_in_key_order(self, pool: DriverPool) -> None:
        """Records come back intact, one key in publish order; acked ones never return."""
        driver, channel, group = await self.provisioned(pool, "c")
        await driver.publish([self.record(channel, "k", n) for n in range(10)])
        subscription = await self.member(pool, driver, group, channel)
        got = await self.take(subscription, 10)
        if driver.features.ordered_per_key:
            assert self.numbers(got) == list(range(10))
        first = got[0]
        assert first.record.channel == channel
        assert first.record.key == "k"
        assert first.record.body.startswith(b"body-")
        assert all(isinstance(v, bytes) for d in got for v in d.record.headers.values())
        assert first.coordinates
        for delivery in got:
            delivery.ack()
        await subscription.settle(got)
        await subscription.settle(got)  # writing a settlement twice is harmless

    async def test_contract_second_settle_is_refused(self, pool: DriverPool) -> None:
        """ack/nack are final: a second one raises AlreadySettledError, the first stands."""
        driver, channel, group = await self.provisioned(pool, "c")
        await driver.publish([self.record(channel, "k", 1), self.record(channel, "j", 2)])
        subscription = await self.member(pool, driver, group, channel)
        one, two = await self.take(subscription, 2)
        one.ack()
        with pytest.raises(AlreadySettledError):
            one.ack()
        with pytest.raises(AlreadySettledError):
            one.nack()
        two.nack()
        with pytest.raises(AlreadySettledError):
            two.ack()
        await subscription.settle([one, two])

    async def test_contract_nack_delay_is_honoured(self, pool: DriverPool) -> None:
        """A nacked record comes back to the group, and not before its delay."""
        driver, channel, group = await self.provisioned(pool, "c")
        await driver.publish([self.record(channel, "k", 1)])
        subscription = await self.member(pool, driver, group, channel)
        [delivery] = await self.take(subscription, 1)
        delay = 1.0
        delivery.nack(delay)
        nacked_at = time.monotonic()
        await subscription.settle([delivery])
        [again] = await self.take(subscription, 1)
        waited = time.monotonic() - nacked_at
        assert waited >= delay - 0.05, f"redelivered after {waited:.3f}s, nack said {delay}s"
        assert self.numbers([again]) == [1]
        assert again.delivery_count >= 1
        again.ack()
        await subscription.settle([again])

    async def test_contract_unsettled_come_back_after_close(self, pool: DriverPool) -> None:
        """Deliveries never settled are delivered again to the next member of the group, and
        the stored position never passes an unsettled delivery (acks above it may stay)."""
        driver, channel, group = await self.provisioned(pool, "c")
        await driver.publish([self.record(channel, "k", n) for n in range(3)])
        first = await self.member(pool, driver, group, channel)
        got = await self.take(first, 3)
        by_number = dict(zip(self.numbers(got), got, strict=True))
        by_number[1].ack()
        by_number[2].ack()
        await first.settle([by_number[1], by_number[2]])
        await first.close()
        second = await self.member(pool, await pool.new(), group, channel)
        again = await self.take(second, 1)
        assert self.numbers(again)[0] == 0, "the unsettled record must come back first"
        for delivery in again:
            delivery.ack()
        await second.settle(again)

    async def test_contract_ephemeral_group_leaves_nothing(self, pool: DriverPool) -> None:
        """An ephemeral group's stored position is deleted when it closes: the same group
        subscribed again starts over (from earliest here: every record again)."""
        driver, channel, group = await self.provisioned(pool, "c")
        await driver.publish([self.record(channel, "k", n) for n in range(3)])
        first = await driver.subscribe(
            SubscriptionSpec(group=group, channels=(channel,), ephemeral=True)
        )
        got = await self.take(first, 3)
        for delivery in got:
            delivery.ack()
        await first.settle(got)
        await first.close()
        second = await self.member(pool, await pool.new(), group, channel)
        again = await self.take(second, 3)
        assert sorted(self.numbers(again)) == [0, 1, 2], "the ephemeral group's acks stayed"
        for delivery in again:
            delivery.ack()
        await second.settle(again)

    async def test_contract_not_before_is_honoured(self, pool: DriverPool) -> None:
        """With delayed_publish, a record is not delivered before its not_before time."""
        driver = await pool.new()
        if not driver.features.delayed_publish:
            pytest.skip(f"{driver.features.name} does not hold records back (delayed_publish)")
        channel, group = self.names("c")
        await driver.provision([channel])
        subscription = await self.member(pool, driver, group, channel)
        due = time.time() + 1.0
        base = self.record(channel, "k", 1)
        await driver.publish(
            [RawRecord(base.channel, base.key, base.headers, base.body, not_before=due)]
        )
        [delivery] = await self.take(subscription, 1)
        assert time.time() >= due - 0.05, "delivered before its not_before time"
        delivery.ack()
        await subscription.settle([delivery])

    async def test_contract_bad_records_are_refused_at_publish(self, pool: DriverPool) -> None:
        """Header values that are not bytes, NUL in a channel: InvalidEventError, nothing stored."""
        driver, channel, _ = await self.provisioned(pool, "c")
        bad = [
            RawRecord(channel, "k", {"h": "text"}, b"x"),  # type: ignore[dict-item]
            RawRecord(channel, "k", {"h": None}, b"x"),  # type: ignore[dict-item]
            RawRecord(channel + "\x00", "k", {}, b"x"),
            RawRecord(channel, "k", {}, "text"),  # type: ignore[arg-type]
            RawRecord(channel, "k", {}, b"x", not_before=float("nan")),
        ]
        for record in bad:
            with pytest.raises(InvalidEventError):
                await driver.publish([record])

    async def test_contract_close_under_subscription_ends_fetch(self, pool: DriverPool) -> None:
        """Closing the driver under a waiting fetch ends it with [] (or an error): no hang."""
        driver, channel, group = await self.provisioned(pool, "c")
        subscription = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        waiting = asyncio.create_task(subscription.fetch(10))
        await asyncio.sleep(0)
        await driver.close()
        try:
            async with asyncio.timeout(self.timeout):
                result = await waiting
        except TimeoutError:
            raise AssertionError("fetch kept waiting after the driver was closed") from None
        except Exception:
            return  # an error is an acceptable end too
        assert list(result) == []
        await subscription.close()

    async def test_contract_second_exclusive_subscription_is_refused(
        self, pool: DriverPool
    ) -> None:
        """Where the broker has exclusive subscriptions, a second one fails at subscribe with
        SubscriptionBusyError naming the group and what to change."""
        driver = await pool.new()
        if not driver.features.exclusive_subscriptions:
            pytest.skip(f"{driver.features.name} has no exclusive subscriptions")
        channel, group = self.names("c")
        await driver.provision([channel])
        spec = SubscriptionSpec(group=group, channels=(channel,), options=self.exclusive_options())
        first = await driver.subscribe(spec)
        pool.closing(first.close)
        other = await pool.new()
        accepted: list[Subscription] = []

        async def second() -> None:
            accepted.append(await other.subscribe(spec))

        with pytest.raises(SubscriptionBusyError, match=group):
            await second()
        for subscription in accepted:
            pool.closing(subscription.close)

    async def test_contract_status_is_cheap_and_safe(self, pool: DriverPool) -> None:
        """status() answers at once, before and after close, and names no secret."""
        driver, channel, group = await self.provisioned(pool, "c")
        subscription = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        status = subscription.status()
        assert isinstance(status.assignment, tuple)
        assert isinstance(status.error, str)
        await subscription.close()
        subscription.status()
