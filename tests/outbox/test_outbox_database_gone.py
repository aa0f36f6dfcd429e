"""The database gone for a few seconds, while the relay runs: this test's own database
stops taking connections (``ALLOW_CONNECTIONS false``) and its connections are killed
(``pg_terminate_backend``); the shared PostgreSQL server itself keeps running. The relay
says it is unhealthy, naming the step that fails, while the database is gone; once it is
back every row goes out (at least once, each key's rows in order) and health() is healthy
again. A cleaner racing the relay meanwhile never deletes an unsent row."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, make_url, text

from db_helpers import (
    RecordingDriver,
    create_pg_database,
    drop_pg_database,
    event_id,
    outbox_emit,
    pg_admin_url,
    reset_tables,
    rows,
)
from hexa_event import Event
from hexa_event.outbox import OutboxCleaner, OutboxRelay
from hexa_event.testing import eventually


def emit(url: str, count: int, keys: int = 5) -> list[str]:
    return outbox_emit(url, [Event("orders", f"k{n % keys}", {"n": n}) for n in range(count)])


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of this test's own, with the outbox tables."""
    url = create_pg_database()
    try:
        reset_tables(url)
        yield url
    finally:
        allow_connections(url, True)
        drop_pg_database(url)


def allow_connections(url: str, allowed: bool) -> None:
    """Let ``url``'s database take connections or not; when not, end the ones it has."""
    name = make_url(url).database
    admin = create_engine(
        make_url(pg_admin_url()).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
    finally:
        admin.dispose()


def first_seen(keys_and_ids: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Each key's event ids in the order they were first published."""
    order: dict[str, list[str]] = {}
    seen: set[str] = set()
    for key, one in keys_and_ids:
        if one not in seen:
            seen.add(one)
            order.setdefault(key, []).append(one)
    return order


@pytest.mark.postgres
async def test_a_relay_rides_out_its_database_gone_for_seconds(own_database: str) -> None:
    url = own_database
    ids = emit(url, 120)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()  # the first batch is publishing when the database goes
    relay = OutboxRelay(
        url,
        driver,
        batch_size=20,
        lease=3.0,
        retry_delay=0.05,
        poll_interval=0.05,
        unhealthy_after=0.5,
        stats_interval=0.1,
    )
    cleaner = OutboxCleaner(url, retention=timedelta(0), interval=0.02, unhealthy_after=0.5)
    async with relay, cleaner:
        running = asyncio.create_task(relay.run())
        cleaning = asyncio.create_task(cleaner.run())
        try:
            await eventually(lambda: driver.in_publish >= 1, what="publishing")
            await asyncio.to_thread(allow_connections, url, False)
            driver.gate.set()  # its marks meet a database that is gone
            await eventually(lambda: bool(relay.health()["problems"]), what="relay unhealthy")
            health = relay.health()
            assert not health["healthy"]
            assert "has failed" in health["reason"] or "has not returned" in health["reason"]
            await eventually(lambda: not cleaner.health()["healthy"], what="cleaner unhealthy")

            await asyncio.to_thread(allow_connections, url, True)
            await eventually(lambda: set(driver.ids()) == set(ids), what="all published")
            await eventually(lambda: relay.health()["healthy"], what="relay healthy again")
            await eventually(lambda: cleaner.health()["healthy"], what="cleaner healthy again")
        finally:
            relay.stop()
            cleaner.stop()
            await asyncio.wait_for(asyncio.gather(running, cleaning), 30)
    assert rows(url, "SELECT count(*) FROM hexa_outbox") == [(0,)]
    published = first_seen([(r.key, event_id(r)) for r in driver.records])
    emitted = first_seen([(f"k{n % 5}", one) for n, one in enumerate(ids)])
    assert published == emitted  # each key's rows in order


async def test_a_cleaner_racing_a_relay_deletes_no_unsent_row(db_url: str) -> None:
    driver = RecordingDriver()
    relay = OutboxRelay(db_url, driver, batch_size=7, poll_interval=0.02, retry_delay=0.02)
    cleaner = OutboxCleaner(db_url, retention=timedelta(0), interval=0.01, batch_size=3)
    ids: list[str] = []
    async with relay, cleaner:
        running = asyncio.create_task(relay.run())
        cleaning = asyncio.create_task(cleaner.run())
        try:
            for _ in range(15):
                ids += await asyncio.to_thread(emit, db_url, 20)
            await eventually(lambda: len(set(driver.ids())) == len(ids), what="all published")
            await eventually(
                lambda: rows(db_url, "SELECT count(*) FROM hexa_outbox_sent") == [(0,)],
                what="the sent log cleaned",
            )
            assert cleaner.health()["healthy"], cleaner.health()
            assert relay.health()["healthy"], relay.health()
        finally:
            relay.stop()
            cleaner.stop()
            await asyncio.wait_for(asyncio.gather(running, cleaning), 30)
    assert set(driver.ids()) == set(ids)
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]
