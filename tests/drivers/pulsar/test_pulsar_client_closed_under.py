"""A receive thread must not depend on ``receive`` returning: CI saw a Pulsar client closed
under a subscription (a subscribe the driver's close overtook) leave the thread waiting in
``receive`` without a timeout, so the subscription's close gave up on it after 10 s. The
thread now waits at most half a second at a time and looks whether it should stop."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pulsar
import pytest

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.drivers.pulsar.consumer import PulsarSubscription


class _NeverAnswers:
    """A consumer whose ``receive`` returns only when given a timeout (then times out)."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def receive(self, timeout_millis: int | None = None) -> Any:
        if timeout_millis is None:
            self.gate.wait()
            raise pulsar.AlreadyClosed("released by the test")
        self.gate.wait(timeout_millis / 1000)
        raise pulsar.Timeout("no message")


async def test_the_receive_thread_stops_although_receive_never_returns(
    make_driver: Callable[..., Awaitable[PulsarDriver]], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await make_driver()
    channel = f"under-{uuid.uuid4().hex[:8]}"
    held: list[threading.Thread] = []
    start = threading.Thread.start

    def hold_receive_threads(thread: threading.Thread) -> None:
        if thread.name.startswith("hexa-event-pulsar"):
            held.append(thread)
        else:
            start(thread)

    monkeypatch.setattr(threading.Thread, "start", hold_receive_threads)
    sub = await driver.subscribe(SubscriptionSpec(group=f"g-{channel}", channels=(channel,)))
    monkeypatch.setattr(threading.Thread, "start", start)
    assert isinstance(sub, PulsarSubscription)
    assert held
    fake = _NeverAnswers()
    for reader in sub._readers:
        reader.native = fake
    for thread in held:
        thread.start()
    try:
        began = time.monotonic()
        await sub.close()
        assert not any(thread.is_alive() for thread in held)
        assert time.monotonic() - began < 5.0
    finally:
        fake.gate.set()
