"""A publish, provision or prune under way when the driver closes: once both ended, no
database connection of the driver is left open (the first publish to a channel prepares
the tables, then records the channel, then writes: a close landing in between disposed the
pool, and the rest opened a new connection nobody closed again)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from pathlib import Path

import pytest

import hexa_event
from hexa_event.driver import RawRecord
from hexa_event.drivers.sql import SqlDriver
from hexa_event.errors import ClosedError
from hexa_event.testing.waiting import eventually


def _sqlite_connections() -> set[threading.Thread]:
    """The threads of open aiosqlite connections (one per connection, ended by its close)."""
    return {
        t
        for t in threading.enumerate()
        if getattr(getattr(t, "_target", None), "__name__", "") == "_connection_worker_thread"
    }


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    from hexa_event_services import require_service

    return require_service("postgres").url


@pytest.mark.parametrize("delay_ms", range(0, 60, 4))
async def test_a_publish_racing_close_leaves_no_connection_open(url: str, delay_ms: int) -> None:
    before = _sqlite_connections()
    driver = hexa_event.connect(url).driver
    assert isinstance(driver, SqlDriver)
    channel = f"orders-{uuid.uuid4().hex[:8]}"  # a new channel: the publish provisions it
    publishing = asyncio.create_task(driver.publish([RawRecord(channel, "k", {}, b"x")]))
    await asyncio.sleep(delay_ms / 1000)
    await driver.close()
    with contextlib.suppress(ClosedError):  # closed first: nothing stored, which is fine
        await publishing
    pool = driver.engine.pool
    assert pool.checkedout() == 0
    assert pool.checkedin() == 0, "a connection opened after close sits in the pool"
    await eventually(
        lambda: not (_sqlite_connections() - before),
        within=10,
        what="every connection of the closed driver closed",
    )


async def test_prepare_and_prune_after_close_raise_closed(tmp_path: Path) -> None:
    driver = hexa_event.connect(f"sqlite:///{tmp_path / 'events.db'}").driver
    assert isinstance(driver, SqlDriver)
    await driver.publish([RawRecord("orders", "k", {}, b"x")])
    await driver.close()
    with pytest.raises(ClosedError):
        await driver.prune(0)
    with pytest.raises(ClosedError):
        await driver.create_channels(["other"])
    assert driver.engine.pool.checkedin() == 0
