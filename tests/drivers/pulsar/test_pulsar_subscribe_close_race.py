"""A subscribe that the driver's close overtakes (close lands while the consumers are being
made) raises ClosedError and closes what it made: it used to return a subscription on a
closed client, whose receive thread stopped silently and whose fetch waited forever."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.drivers.pulsar.consumer import PulsarSubscription
from hexa_event.errors import ClosedError


async def test_a_subscribe_overtaken_by_close_raises_closed(
    make_driver: Callable[..., Awaitable[PulsarDriver]], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = await make_driver()
    channel = f"race-{uuid.uuid4().hex[:8]}"
    started: list[PulsarSubscription] = []
    start = PulsarSubscription.start

    async def start_then_close(self: PulsarSubscription, *args: Any) -> None:
        await start(self, *args)
        started.append(self)
        await driver.close()  # another task's close, landing at the subscribe's last await

    monkeypatch.setattr(PulsarSubscription, "start", start_then_close)
    with pytest.raises(ClosedError):
        await driver.subscribe(SubscriptionSpec(group=f"g-{channel}", channels=(channel,)))
    assert [sub.closed for sub in started] == [True]
    assert not any(reader.thread.is_alive() for reader in started[0]._readers)
