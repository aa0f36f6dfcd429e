"""A subscribe that the driver's close overtakes (close lands while the channels are being
joined) raises ClosedError and closes what it made, rather than returning a subscription
left among the members of a closed session."""

from __future__ import annotations

import uuid

import pytest

import hexa_event as he
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.stan.consumer import StanSubscription
from hexa_event.errors import ClosedError


async def test_a_subscribe_overtaken_by_close_raises_closed(
    stan_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = he.connect(stan_url).driver
    channel = f"race-{uuid.uuid4().hex[:8]}"
    started: list[StanSubscription] = []
    open_ = StanSubscription.open

    async def open_then_close(self: StanSubscription) -> None:
        await open_(self)
        started.append(self)
        await driver.close()  # another task's close, landing at the subscribe's last await

    monkeypatch.setattr(StanSubscription, "open", open_then_close)
    try:
        spec = SubscriptionSpec(group=f"g-{channel}", channels=(channel,), ephemeral=True)
        with pytest.raises(ClosedError):
            await driver.subscribe(spec)
        assert [sub.closed for sub in started] == [True]
        assert not driver.session.members  # type: ignore[attr-defined]
    finally:
        await driver.close()
