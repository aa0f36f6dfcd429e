"""A Pulsar subscription's close whose caller is cancelled (a timeout around it, Ctrl-C in
a command) still closes every consumer: the close went no further than the consumer it was
closing, and a second close returned at once, so the other consumers (the retry channels'
one) stayed open with their receive threads, holding their messages and Key_Shared keys
until the whole client closed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pulsar

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.testing.waiting import eventually


class _Native:
    """The binding's consumer: receive waits until the consumer is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def receive(self) -> Any:
        self.closed.wait()
        raise pulsar.AlreadyClosed("closed")

    def batch_receive(self) -> list[Any]:
        return []


class _Consumer:
    def __init__(self, slow: threading.Event | None) -> None:
        self._consumer = _Native()
        self._slow = slow
        self.closing = threading.Event()

    def close(self) -> None:
        self.closing.set()
        if self._slow is not None:
            self._slow.wait(10)
        self._consumer.closed.set()

    def is_connected(self) -> bool:
        return True


class _Client:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.made: list[_Consumer] = []

    def subscribe(self, topics: Any, name: str, **_: Any) -> _Consumer:
        consumer = _Consumer(self.release if not self.made else None)  # the first is slow
        self.made.append(consumer)
        return consumer


async def test_a_cancelled_close_still_closes_every_consumer() -> None:
    client = _Client()
    spec = SubscriptionSpec(
        group="g", channels=("orders", "orders.retry"), retry_channels=("orders.retry",)
    )
    sub = PulsarSubscription(
        client,  # type: ignore[arg-type]
        PulsarOptions(),
        spec,
        PulsarSubscriptionOptions(),
        lambda _sub: None,
        None,  # type: ignore[arg-type]
    )
    await sub.start()
    assert len(client.made) == 2
    closing = asyncio.create_task(sub.close())
    await eventually(client.made[0].closing.is_set, within=10, what="the first consumer closing")
    closing.cancel()
    await asyncio.gather(closing, return_exceptions=True)
    client.release.set()
    await sub.close()  # a second close: a no-op
    await eventually(
        lambda: all(c._consumer.closed.is_set() for c in client.made),
        within=10,
        what="every consumer closed",
    )
