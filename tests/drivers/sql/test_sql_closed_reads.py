"""Reads after the SQL driver closed raise ClosedError and open no connection: a
subscription's ``lag()`` (a receiver asks every few seconds, also when the driver was closed
under it) and the PostgreSQL ``check()``. Before, each opened a new connection in the
disposed engine's fresh pool, which nobody closed again (an open SQLite file, an idle
PostgreSQL session until the process ended)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import hexa_event
from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver
from hexa_event.errors import ClosedError


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    from hexa_event_services import require_service

    return require_service("postgres").url


def _no_connection(driver: SqlDriver) -> None:
    pool = driver.engine.pool
    assert (pool.checkedout(), pool.checkedin()) == (0, 0), "a connection opened after close"


async def test_lag_after_close_raises_closed_and_opens_nothing(url: str) -> None:
    driver = hexa_event.connect(url).driver
    assert isinstance(driver, SqlDriver)
    channel = f"orders-{uuid.uuid4().hex[:8]}"
    await driver.publish([RawRecord(channel, "k", {}, b"x")])
    spec = SubscriptionSpec(group=f"g-{channel}", channels=(channel,), ephemeral=True)
    subscription = await driver.subscribe(spec)
    assert await subscription.lag() == {channel: 1}
    await driver.close()
    with pytest.raises(ClosedError):
        await subscription.lag()
    _no_connection(driver)


@pytest.mark.postgres
async def test_check_after_close_raises_closed_and_opens_nothing() -> None:
    from hexa_event_services import require_service

    driver = hexa_event.connect(require_service("postgres").url).driver
    assert isinstance(driver, SqlDriver)
    assert await driver.check() == "database answers"
    await driver.close()
    with pytest.raises(ClosedError):
        await driver.check()
    _no_connection(driver)
