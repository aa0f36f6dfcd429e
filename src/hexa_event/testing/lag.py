"""The lag check of the conformance suite: a group's lag rises and falls with its backlog.

:class:`LagConformance` is part of
:class:`~hexa_event.testing.conformance.DriverConformance`. It reads the lag the way an
operator does, through ``Receiver.health()`` (the receiver samples
:meth:`~hexa_event.driver.Subscription.lag` in the background), so it checks the driver's
answer and the sampling together. A driver that cannot tell its lag sets
``reports_lag = False`` on its test class.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from ..context import Context
from ..event import Event, Message
from .contract import DriverPool
from .settling import SettlementConformance
from .waiting import Collector, eventually


class LagConformance(SettlementConformance):
    """Lag per action: exactly the records not yet settled by the group."""

    reports_lag: ClassVar[bool] = True
    """False for a driver whose ``Subscription.lag()`` answers None (unknown)."""

    async def test_lag_rises_while_handlers_block_and_falls_after(self, pool: DriverPool) -> None:
        """N events emitted while the handler blocks: lag N; released: lag 0."""
        if not self.reports_lag:
            pytest.skip("this driver does not report its lag")
        driver, channel, action = await self.provisioned(pool)
        release = asyncio.Event()
        began = Collector()
        receiver = driver.receiver("svc", lag_interval=0.1)

        @receiver.subscribe(channel, action=action)
        async def block(ctx: Context, msg: Message[Any]) -> None:
            began.add(msg.id)
            await release.wait()

        await self.started(pool, receiver)

        def health() -> dict[str, Any]:
            info: dict[str, Any] = receiver.health()["actions"][action]
            return info

        await eventually(
            lambda: health()["lag_age"] is not None, within=self.timeout, what="a lag sample"
        )
        assert health()["lag"] is not None, (
            "Subscription.lag() answered None (unknown): implement it, or set reports_lag = "
            "False on the test class"
        )
        await eventually(lambda: health()["lag"] == 0, within=self.timeout, what="lag 0 at first")
        count = 12 * self.scale
        emitter = driver.emitter()
        await emitter.emit_many(Event(channel, f"k{i}", {"i": i}) for i in range(count))
        await began.wait_for(count, within=self.timeout)
        await eventually(
            lambda: health()["lag"] == count,
            within=self.timeout,
            what=f"lag {count} while the handlers block",
        )
        assert health()["lag_by_channel"].get(channel, count) == count
        assert 0 <= health()["lag_age"] < self.timeout
        release.set()
        await eventually(lambda: health()["lag"] == 0, within=self.timeout, what="lag back to 0")
