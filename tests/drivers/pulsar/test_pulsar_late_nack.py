"""A nack longer than the consumer's nack delay waits on a timer of the driver's; when the
consumer is closed under it meanwhile (the client closed first), the late nack is logged and
nothing is raised into the event loop (Pulsar gives the message back with the consumer)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pulsar
import pytest

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.drivers.pulsar.options import SubscriptionType
from hexa_event.testing.waiting import eventually


class _Native:
    """The binding consumer: nothing to receive; closed, so a nack raises."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.nacks = 0

    def receive(self, timeout_ms: int) -> Any:
        self.closed.wait(timeout_ms / 1000)
        raise pulsar.Timeout()

    def batch_receive(self) -> list[Any]:
        return []

    def negative_acknowledge(self, message: Any) -> None:
        self.nacks += 1
        raise pulsar.AlreadyClosed()


class _Consumer:
    def __init__(self) -> None:
        self._consumer = _Native()

    def is_connected(self) -> bool:
        return True

    def close(self) -> None:
        self._consumer.closed.set()


class _Client:
    def __init__(self) -> None:
        self.consumer = _Consumer()

    def subscribe(self, topic: Any, name: str, **_: Any) -> _Consumer:
        return self.consumer


async def test_a_late_nack_on_a_closed_consumer_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = _Client()
    sub = PulsarSubscription(
        client,  # type: ignore[arg-type]
        PulsarOptions(),
        SubscriptionSpec(group="g", channels=("orders",)),
        PulsarSubscriptionOptions(nack_delay=0.1),
        lambda _sub: None,
        None,  # type: ignore[arg-type]
    )
    await sub._open(["orders"], SubscriptionType.KEY_SHARED)
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    with caplog.at_level(logging.DEBUG, logger="hexa_event.drivers.pulsar.consumer"):
        sub._readers[0].nack(object(), 0.3)  # 0.2 s past the consumer's nack delay: a timer
        assert client.consumer._consumer.nacks == 0
        await eventually(lambda: "late nack" in caplog.text, within=10, what="the late nack")
    assert client.consumer._consumer.nacks == 1
    assert errors == []
    await sub.close()
