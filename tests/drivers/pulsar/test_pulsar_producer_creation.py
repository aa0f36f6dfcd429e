"""Callers waiting for the same channel's producer share one creation attempt."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pulsar

from hexa_event.driver import RawRecord
from hexa_event.drivers.pulsar import PulsarOptions
from hexa_event.drivers.pulsar.producer import PulsarProducers
from hexa_event.errors import DriverError


class _Unreachable:
    """A client whose producer creation fails once released (a broker gone)."""

    def __init__(self) -> None:
        self.attempts = 0
        self.release = threading.Event()

    def create_producer(self, topic: str, **_: Any) -> Any:
        self.attempts += 1
        self.release.wait(10)
        raise pulsar.ConnectError("connection refused")


async def test_concurrent_publishes_to_a_new_channel_share_one_failed_creation() -> None:
    """With the broker gone, N publishes to a new channel fail together after one attempt
    (the operation timeout once), not one attempt after the other (N timeouts)."""
    client = _Unreachable()
    producers = PulsarProducers(client, PulsarOptions())  # type: ignore[arg-type]
    calls = [
        asyncio.create_task(producers.publish([RawRecord("c", "k", {}, b"%d" % n)], {"c": 0}))
        for n in range(3)
    ]
    async with asyncio.timeout(10):
        while not client.attempts:  # noqa: ASYNC110 (under way: every call has started)
            await asyncio.sleep(0.01)
    client.release.set()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, DriverError) for r in results), results
    assert client.attempts == 1
