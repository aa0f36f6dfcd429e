"""Provisioning looks at every channel at once: a receiver's start provisions its channel,
retry channels and dead-letter channel (two or three admin calls each), which one after the
other took 0.2-0.3 s. The admin API is faked here: no broker is needed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from hexa_event.drivers.pulsar import PulsarDriver, PulsarOptions
from hexa_event.drivers.pulsar.admin import PulsarAdmin
from hexa_event.errors import ChannelNotFoundError

_WAIT = 10.0
"""How long a fake admin call waits for the others (seconds): a deadline, not a pause."""


class _AtOnce(PulsarAdmin):
    """Each channel's first look waits until every channel was asked for: answers only
    when the looks run at the same time (one after the other, the barrier breaks)."""

    def __init__(self, options: PulsarOptions, parties: int) -> None:
        super().__init__(options)
        self.barrier = threading.Barrier(parties, timeout=_WAIT)
        self.created: list[str] = []
        self.retained: list[str] = []

    def partitions(self, channel: str) -> int | None:
        if channel in self.created:
            return 0
        self.barrier.wait()
        return None

    def create(self, channel: str, partitions: int) -> None:
        self.created.append(channel)

    def retain_forever(self, channel: str) -> bool:
        self.retained.append(channel)
        return True


class _SecondFailsFirst(PulsarAdmin):
    """No topic exists; the first channel's look answers only after the second's did."""

    def __init__(self, options: PulsarOptions, first: str) -> None:
        super().__init__(options)
        self.first = first
        self.second_answered = threading.Event()

    def partitions(self, channel: str) -> int | None:
        if channel == self.first:
            assert self.second_answered.wait(_WAIT)
        else:
            self.second_answered.set()
        return None


@pytest.fixture
async def driver() -> AsyncIterator[PulsarDriver]:
    made = PulsarDriver(service_url="pulsar://127.0.0.1:1", admin_url="http://127.0.0.1:1")
    yield made
    await made.close()


async def test_a_receivers_channels_are_provisioned_at_once(driver: PulsarDriver) -> None:
    channels = ["orders", "orders.retry.1", "orders.retry.2", "orders.dlq"]
    admin = _AtOnce(driver.options, len(channels))
    driver._admin = admin

    assert await driver.create_channels(channels) == dict.fromkeys(channels, 0)

    assert sorted(admin.created) == sorted(channels)
    assert admin.retained == ["orders.dlq"]


async def test_the_first_missing_channel_is_named_whichever_answered_first() -> None:
    driver = PulsarDriver(
        service_url="pulsar://127.0.0.1:1", admin_url="http://127.0.0.1:1", provision=False
    )
    try:
        driver._admin = _SecondFailsFirst(driver.options, "orders")
        with pytest.raises(ChannelNotFoundError) as raised:
            await driver.create_channels(["orders", "payments"])
        assert raised.value.channel == "orders"
    finally:
        await driver.close()


class _Held(PulsarAdmin):
    """Every topic exists; each look waits until the test lets them all go."""

    def __init__(self, options: PulsarOptions) -> None:
        super().__init__(options)
        self.go = threading.Event()

    def partitions(self, channel: str) -> int | None:
        assert self.go.wait(_WAIT)
        return 0


class _Counting(ThreadPoolExecutor):
    """Counts the calls handed to it and not finished, and the most at once."""

    def __init__(self) -> None:
        super().__init__(32)
        self.lock = threading.Lock()
        self.in_flight = self.most = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with self.lock:
            self.in_flight -= 1


async def test_at_most_eight_channels_are_provisioned_at_a_time(driver: PulsarDriver) -> None:
    loop = asyncio.get_running_loop()
    executor = _Counting()
    loop.set_default_executor(executor)
    admin = _Held(driver.options)
    driver._admin = admin
    channels = [f"c{n}" for n in range(16)]

    creating = asyncio.ensure_future(driver.create_channels(channels))
    deadline = loop.time() + _WAIT
    while executor.in_flight < 8:  # every look that may start has started by then
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    admin.go.set()

    assert await creating == dict.fromkeys(channels, 0)
    assert executor.most == 8
