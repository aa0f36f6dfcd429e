"""Request/reply under attack: a broker that never answers, a reply subscription that ends,
hostile timeouts and replies (memory driver, with a wrapped driver where the broker must
misbehave)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

import hexa_event as he
from hexa_event import replies
from hexa_event.driver import Delivery, Subscription
from hexa_event.errors import ClosedError, RequestTimeoutError
from hexa_event.testing.waiting import eventually


class Wrapped(Subscription):
    """A subscription that passes everything on, and can be made to hang on close."""

    def __init__(self, inner: Subscription, close_hangs: asyncio.Event | None = None) -> None:
        self.inner = inner
        self.close_hangs = close_hangs

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self.inner.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.settle(deliveries)

    async def close(self) -> None:
        await self.inner.close()
        if self.close_hangs is not None:
            await self.close_hangs.wait()


class Broker(he.Connection):
    """The memory driver, with a subscribe or a subscription's close that never answers
    (a broker that accepts the connection and then says nothing)."""

    def __init__(self, driver: he.Driver) -> None:
        super().__init__(driver)
        self.never = asyncio.Event()
        self.subscribe_hangs = False
        self.close_hangs = False
        self.subscribed: list[Wrapped] = []

    async def subscribe(self, spec: he.SubscriptionSpec) -> he.Subscription:
        if self.subscribe_hangs:
            await self.never.wait()
        wrapped = Wrapped(await super().subscribe(spec), self.never if self.close_hangs else None)
        self.subscribed.append(wrapped)
        return wrapped


async def test_close_gives_up_on_a_reply_subscribe_that_never_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing an emitter whose first request is still subscribing to a broker that never
    answers returns after the bound, saying so, instead of waiting forever."""
    monkeypatch.setattr(replies, "_STEP_TIMEOUT", 0.2)
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    broker.subscribe_hangs = True
    emitter = he.Emitter(broker)
    with pytest.raises(RequestTimeoutError):
        await emitter.request(he.Event("ask", "k", {}), timeout=0.05)
    began = time.monotonic()
    await asyncio.wait_for(emitter.close(), 10)
    assert time.monotonic() - began < 5
    assert "gave up opening the reply channel" in caplog.text
    assert emitter.reply_channel in caplog.text
    await conn.close()


async def test_close_fails_waiting_requests_at_once_and_bounds_a_hanging_close(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A request waiting for its reply fails with ClosedError as soon as close() begins, and
    a subscription whose close never answers holds close() up for the bound only."""
    monkeypatch.setattr(replies, "_STEP_TIMEOUT", 1.0)
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    broker.close_hangs = True
    emitter = he.Emitter(broker)
    waiting = asyncio.create_task(emitter.request(he.Event("nobody", "k", {}), timeout=60))
    await eventually(lambda: bool(broker.subscribed), within=10, what="the reply channel")
    began = time.monotonic()
    closing = asyncio.create_task(emitter.close())
    with pytest.raises(ClosedError):
        await asyncio.wait_for(waiting, 10)
    assert not closing.done()  # the request did not wait for the subscription's close
    await asyncio.wait_for(closing, 10)
    assert time.monotonic() - began < 5
    assert "closing the subscription of the reply channel" in caplog.text
    await conn.close()
