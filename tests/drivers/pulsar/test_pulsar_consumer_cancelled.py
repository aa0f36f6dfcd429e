"""A consumer whose creation was cancelled midway (the subscription closed while pattern
discovery was opening one: close cancels the watch task) is closed once the client made
it. It was left open with no reader: with Key_Shared it took its share of the keys, whose
messages then waited in it until the whole client closed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.drivers.pulsar.options import SubscriptionType
from hexa_event.testing.waiting import eventually


class _Consumer:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Client:
    """A client whose subscribe waits for ``release`` (a slow broker), then makes one."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.made: list[_Consumer] = []

    def subscribe(self, topics: Any, name: str, **_: Any) -> _Consumer:
        self.entered.set()
        self.release.wait(10)
        consumer = _Consumer()
        self.made.append(consumer)
        return consumer


async def test_a_consumer_made_after_its_creation_was_cancelled_is_closed() -> None:
    client = _Client()
    spec = SubscriptionSpec(group="g", pattern="orders-.*")
    sub = PulsarSubscription(
        client,  # type: ignore[arg-type]
        PulsarOptions(),
        spec,
        PulsarSubscriptionOptions(),
        lambda _sub: None,
        None,  # type: ignore[arg-type]
    )
    opening = asyncio.create_task(sub._open(["orders-1"], SubscriptionType.KEY_SHARED))
    await eventually(client.entered.is_set, within=10, what="subscribe under way")
    opening.cancel()  # what the subscription's close does to its watch task
    await asyncio.gather(opening, return_exceptions=True)
    client.release.set()
    await eventually(lambda: bool(client.made) and client.made[0].closed, within=10)
    assert sub._readers == []
