"""Lag: the receiver's background sample in health(), the driver contract's default, and
the ``hexa_event_consumer_lag`` gauge in Prometheus text rising and falling (memory)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event.driver import (
    ALL_CHANNELS,
    Delivery,
    Driver,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from hexa_event.errors import DriverError
from hexa_event.testing import Collector, eventually


def _url() -> str:
    return f"memory://{uuid.uuid4().hex}"


class _Bare(Subscription):
    def __init__(self, lag: int | None) -> None:
        self._lag = lag

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return []

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        pass

    async def close(self) -> None:
        pass

    def status(self) -> SubscriptionStatus:
        return SubscriptionStatus(lag=self._lag)


async def test_default_lag_is_unknown_or_the_status_figure() -> None:
    assert await _Bare(None).lag() is None
    assert await _Bare(7).lag() == {ALL_CHANNELS: 7}


async def test_health_reports_lag_per_channel_with_the_retry_channels() -> None:
    conn = he.connect(_url())
    receiver = conn.receiver("svc", lag_interval=0.1)
    release = asyncio.Event()

    @receiver.subscribe("orders", action="bill", retry=he.RetryPolicy(max_retries=2))
    async def bill(ctx: he.Context, msg: he.Message[Any]) -> None:
        await release.wait()

    async with receiver:
        before = receiver.health()["actions"]["bill"]
        await conn.emitter().emit_many(he.Event("orders", f"k{i}", {}) for i in range(3))
        await eventually(lambda: receiver.health()["actions"]["bill"]["lag"] == 3, within=10)
        info = receiver.health()["actions"]["bill"]
        assert info["lag_by_channel"] == {"orders": 3, "bill.retry.1": 0, "bill.retry.2": 0}
        assert 0 <= info["lag_age"] < 10
        release.set()
        await eventually(lambda: receiver.health()["actions"]["bill"]["lag"] == 0, within=10)
    await conn.close()
    assert before["lag_age"] is None or before["lag"] == 0


class _FailingLag(Driver):
    """The memory driver whose subscriptions answer lag once, then fail to."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.features = inner.features
        self.answers = 0

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await self.inner.publish(records)

    async def provision(self, channels: Sequence[str]) -> None:
        await self.inner.provision(channels)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        return _FailingLagSubscription(self, await self.inner.subscribe(spec))

    async def close(self) -> None:
        await self.inner.close()


class _FailingLagSubscription(Subscription):
    def __init__(self, owner: _FailingLag, inner: Subscription) -> None:
        self.owner, self.inner = owner, inner

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self.inner.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.settle(deliveries)

    async def close(self) -> None:
        await self.inner.close()

    async def lag(self) -> Mapping[str, int] | None:
        self.owner.answers += 1
        if self.owner.answers > 1:
            raise DriverError("broker unreachable")
        return await self.inner.lag()


async def test_a_failing_lag_query_keeps_the_last_sample_and_its_age_grows() -> None:
    driver = _FailingLag(he.connect(_url()).driver)
    receiver = he.Receiver(driver, name="svc", lag_interval=0.1)
    receiver.subscribe("c", action="a", handler=lambda ctx, msg: None)
    async with receiver:
        await eventually(lambda: driver.answers >= 3, within=10, what="failed samples")
        info = receiver.health()["actions"]["a"]
        assert info["lag"] == 0
        assert info["lag_error"] == "DriverError: broker unreachable"
        first_age = info["lag_age"]
        await eventually(
            lambda: receiver.health()["actions"]["a"]["lag_age"] > first_age, within=10
        )
        assert receiver.health()["healthy"]  # lag is information, not a health failure
    await driver.close()


def test_lag_interval_must_be_positive() -> None:
    with pytest.raises(he.ConfigurationError, match="lag_interval"):
        he.connect(_url()).receiver("svc", lag_interval=0)


async def test_lag_gauge_in_prometheus_text_rises_and_falls() -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, generate_latest

    from hexa_event.telemetry import Telemetry

    meters = MeterProvider(metric_readers=[PrometheusMetricReader()])
    conn = Telemetry(meter_provider=meters).instrument(he.connect(_url()))
    action, channel = f"act-{uuid.uuid4().hex[:8]}", "scaled"
    receiver = conn.receiver("svc", lag_interval=0.1)
    release = asyncio.Event()
    began = Collector()

    @receiver.subscribe(channel, action=action)
    async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        began.add(msg.id)
        await release.wait()

    def scraped() -> float | None:
        wanted = ("hexa_event_consumer_lag{", f'action="{action}"', f'channel="{channel}"')
        for line in generate_latest(REGISTRY).decode().splitlines():
            if all(part in line for part in wanted):
                return float(line.rsplit(" ", 1)[1])
        return None

    try:
        async with receiver:
            await eventually(lambda: scraped() == 0.0, within=10, what="lag 0 scraped")
            await conn.emitter().emit_many(he.Event(channel, f"k{i}", {}) for i in range(5))
            await began.wait_for(5, within=10)
            await eventually(lambda: scraped() == 5.0, within=10, what="lag 5 scraped")
            text = generate_latest(REGISTRY).decode()
            assert f'hexa_event_consumer_lag_age_seconds{{action="{action}"' in text
            release.set()
            await eventually(lambda: scraped() == 0.0, within=10, what="lag back to 0")
    finally:
        meters.shutdown()
        await conn.close()
