"""Issue 9 #5: PostgreSQL refusing connections for a few seconds while handlers fail.

Each run gets a database of its own on the shared server, so cutting it off (terminating
its sessions and ``ALLOW_CONNECTIONS false``) disturbs no other test. While it is cut off
the retry copies cannot be written and the fallback nacks cannot be settled: the core keeps
retrying the settlement, and once the database is back every event is handled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import hexa_event as he
from hexa_event.retry import RetryPolicy
from hexa_event.testing import Collector
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.postgres


@pytest.fixture
async def admin() -> AsyncIterator[AsyncEngine]:
    from hexa_event_services import require_service

    url = make_url(require_service("postgres").url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    yield engine
    await engine.dispose()


@pytest.fixture
async def database(admin: AsyncEngine) -> AsyncIterator[str]:
    name = f"hexa_outage_{uuid.uuid4().hex[:10]}"
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    yield name
    async with admin.connect() as conn:
        await conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def cut_off(admin: AsyncEngine, name: str, seconds: float) -> None:
    async with admin.connect() as conn:
        await conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        await conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
            {"d": name},
        )
    await asyncio.sleep(seconds)
    async with admin.connect() as conn:
        await conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))


async def test_an_outage_while_handlers_fail_strands_nothing(
    admin: AsyncEngine, database: str
) -> None:
    url = admin.url.set(drivername="postgresql", database=database).render_as_string(False)
    conn = he.connect(url, heartbeat_interval=0.5, lease_ttl=10.0)
    channel = f"orders-{uuid.uuid4().hex[:8]}"
    action = f"outage-{uuid.uuid4().hex[:8]}"
    await conn.provision([channel])
    seen: set[str] = set()
    handled = Collector()
    outage: list[asyncio.Task[None]] = []

    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.id not in seen:
            seen.add(msg.id)
            if not outage:
                outage.append(asyncio.create_task(cut_off(admin, database, 4.0)))
                await asyncio.sleep(0.2)  # fail while the database is going away
            raise RuntimeError("first attempt fails")
        handled.add(msg.id)

    ids = set(
        await conn.emitter().emit_many(
            he.Event(channel, f"k{n % 20}", {"n": n}) for n in range(100)
        )
    )
    receiver = conn.receiver("svc")
    receiver.subscribe(channel, action=action, handler=handle, retry=RetryPolicy(initial_delay=0.2))
    try:
        async with receiver:
            await eventually(lambda: bool(outage) and outage[0].done(), within=60, what="outage")
            await eventually(
                lambda: set(handled.items) >= ids, within=90, what="every event handled"
            )
            await eventually(lambda: receiver.health()["healthy"], within=30, what="healthy")
    finally:
        for task in outage:
            await asyncio.gather(task, return_exceptions=True)
        await conn.close()


async def test_sqlite_disk_full_while_handlers_fail_strands_nothing(tmp_path: Any) -> None:
    """The same with SQLite's disk full (SQLITE_FULL, through ``max_page_count`` set on every
    connection the driver checks out while the "disk" is full)."""
    from sqlalchemy import event

    from hexa_event.drivers.sql import SqlDriver

    full = {"on": False}
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")

    @event.listens_for(engine.sync_engine, "checkout")
    def _limit(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if full["on"]:
                cursor.execute("PRAGMA page_count")
                pages = cursor.fetchone()[0]
                cursor.execute(f"PRAGMA max_page_count = {pages}")
            else:
                cursor.execute("PRAGMA max_page_count = 1073741823")
        finally:
            cursor.close()

    driver = SqlDriver.from_engine(engine, heartbeat_interval=0.5, lease_ttl=10.0)
    conn = he.Connection(driver)
    channel = f"orders-{uuid.uuid4().hex[:8]}"
    action = f"full-{uuid.uuid4().hex[:8]}"
    await conn.provision([channel])
    seen: set[str] = set()
    handled = Collector()
    filled = asyncio.Event()

    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.id not in seen:
            seen.add(msg.id)
            if not full["on"] and not filled.is_set():
                full["on"] = True
                await engine.dispose()  # pooled connections pick the limit up at checkout
                filled.set()
            raise RuntimeError("first attempt fails")
        handled.add(msg.id)

    ids = set(
        await conn.emitter().emit_many(
            he.Event(channel, f"k{n % 20}", {"n": n}) for n in range(100)
        )
    )
    receiver = conn.receiver("svc")
    receiver.subscribe(channel, action=action, handler=handle, retry=RetryPolicy(initial_delay=0.2))
    try:
        async with receiver:
            await asyncio.wait_for(filled.wait(), 30)
            await eventually(
                lambda: "database or disk is full" in receiver.health()["reason"],
                within=30,
                what="disk full seen",
            )
            await asyncio.sleep(2.0)  # keep the disk full for a while
            full["on"] = False
            await engine.dispose()
            await eventually(
                lambda: set(handled.items) >= ids, within=90, what="every event handled"
            )
            await eventually(lambda: receiver.health()["healthy"], within=30, what="healthy")
    finally:
        await conn.close()
        await engine.dispose()
