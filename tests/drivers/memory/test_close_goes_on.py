"""A driver's close goes on past a subscription whose close raises: the other subscriptions
and the engine are still closed, and the error is raised at the end (it stopped at the
first failure, leaving the rest subscribed and the engine's clients open)."""

from __future__ import annotations

import pytest

import hexa_event as he
from hexa_event.driver import SubscriptionSpec


async def test_one_failing_subscription_close_does_not_skip_the_rest() -> None:
    driver = he.connect("memory://close-goes-on").driver
    first = await driver.subscribe(SubscriptionSpec(group="g1", channels=("a",)))
    second = await driver.subscribe(SubscriptionSpec(group="g2", channels=("b",)))
    closed: list[str] = []

    async def broken() -> None:
        raise RuntimeError("the broker hung up")

    async def noted(name: str, close: object) -> None:
        closed.append(name)
        await close()  # type: ignore[operator]

    engine_closed = []
    close_engine = driver.close_engine

    async def engine() -> None:
        engine_closed.append(True)
        await close_engine()

    subs = {id(first): "first", id(second): "second"}
    for sub in (first, second):
        if subs[id(sub)] == "first":
            sub.close = broken  # type: ignore[method-assign]
        else:
            original = sub.close
            sub.close = lambda original=original: noted("second", original)  # type: ignore[method-assign]
    driver.close_engine = engine  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="hung up"):
        await driver.close()
    assert closed == ["second"]
    assert engine_closed == [True]
