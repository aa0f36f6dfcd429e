"""``health()`` of the relay and the cleaners: unhealthy once claiming, publishing, marking
sent or cleaning has failed every time for ``unhealthy_after``, healthy again once it works;
never on one failure. Failures come from a database without the tables, a trigger refusing
the sent log, and a driver refusing every publish (nothing shared is stopped)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from db_helpers import RecordingDriver, create_pg_database, drop_pg_database, outbox_emit, rows
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.errors import ConfigurationError
from hexa_event.inbox import InboxCleaner
from hexa_event.inbox import migrate as migrate_inbox
from hexa_event.outbox import OutboxCleaner, OutboxRelay, migrate
from hexa_event.testing import eventually

FAST = {"unhealthy_after": 0.3, "retry_delay": 0.05, "poll_interval": 0.05, "lease": 2.0}


def emit(url: str, count: int) -> list[str]:
    return outbox_emit(url, [Event("orders", f"k{n % 3}", {"n": n}) for n in range(count)])


@contextlib.asynccontextmanager
async def running(loop: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        loop.stop()
        await asyncio.wait_for(task, 30)


def check(loop: Any, predicate: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
    return lambda: predicate(loop.health())


async def failing(loop: Any, step: str) -> dict[str, Any]:
    """``loop``'s health once it names ``step`` failing past ``unhealthy_after``. Another
    problem may come first on a loaded machine (a claim slower than the short bound used
    here, named as such); the step's own line is what is waited for."""
    await eventually(
        check(loop, lambda h: any(p.startswith(f"{step} has failed") for p in h["problems"])),
        what=f"{step} failing",
    )
    return dict(loop.health())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database without the outbox and inbox tables (claims and deletes fail there)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


async def test_a_relay_whose_publishes_all_fail_turns_unhealthy_then_recovers(
    db_url: str,
) -> None:
    ids = emit(db_url, 6)
    driver = RecordingDriver()
    driver.fail_next = 10**9
    relay = OutboxRelay(db_url, driver, stats_interval=0.05, **FAST)
    before = relay.health()
    assert (before["state"], before["healthy"], before["reason"]) == ("new", False, "relay is new")
    async with relay, running(relay):
        health = await failing(relay, "publishing")
        assert health["state"] == "running"
        assert (health["alive"], health["stalled"]) == (True, False)
        assert "publishing has failed" in health["reason"], health
        assert "injected publish failure" in health["publish_error"]
        assert health["failed_batches"] >= 2
        assert health["claim_error"] == health["mark_error"] == ""
        assert health["failing_for"] >= 0.3
        await eventually(check(relay, lambda h: h["backlog"] == 6), what="backlog sampled")
        assert relay.health()["oldest_unsent_age"] is not None

        driver.fail_next = 0  # the broker takes them again
        await eventually(check(relay, lambda h: h["healthy"]), what="healthy again")
        await eventually(lambda: len(set(driver.ids())) == 6, what="all published")
        await eventually(check(relay, lambda h: h["backlog"] == 0), what="backlog sampled 0")
        health = relay.health()
        assert (health["publish_error"], health["failing_for"], health["reason"]) == ("", 0.0, "")
        assert health["published"] == 6
    assert set(driver.ids()) == set(ids)
    assert relay.health()["state"] == "closed"


async def test_one_failed_publish_is_not_unhealthy(db_url: str) -> None:
    """One failure, however long ago, is a blip: the rows wait ``retry_delay`` (long here),
    and the relay stays healthy past ``unhealthy_after``."""
    emit(db_url, 3)
    driver = RecordingDriver()
    driver.fail_next = 1
    relay = OutboxRelay(db_url, driver, **{**FAST, "unhealthy_after": 0.1, "retry_delay": 60})
    async with relay, running(relay):
        await eventually(check(relay, lambda h: h["failing_for"] > 0.2), what="time passing")
        health = relay.health()
        assert health["failed_batches"] == 1
        # a claim slower than 0.1 s on a loaded machine may be named; publishing must not be
        assert not [p for p in health["problems"] if "publishing" in p], health
        assert "injected" in health["publish_error"]


async def test_a_relay_whose_claims_fail_turns_unhealthy_then_recovers(empty_db: str) -> None:
    driver = RecordingDriver()
    relay = OutboxRelay(empty_db, driver, stats_interval=0.05, **FAST)
    async with relay, running(relay) as task:
        health = await failing(relay, "claiming")
        assert "hexa_outbox" in health["claim_error"]  # the missing table, named
        assert health["backlog"] is None
        assert "hexa_outbox" in health["backlog_error"]
        assert health["alive"]
        assert not task.done()

        migrate(empty_db)
        emit(empty_db, 2)
        await eventually(check(relay, lambda h: h["healthy"]), what="healthy again")
        await eventually(lambda: len(driver.ids()) == 2, what="published")
        await eventually(check(relay, lambda h: h["backlog_error"] == ""), what="sampled")


@pytest.mark.postgres
async def test_marks_that_fail_make_a_relay_unhealthy(pg_url: str) -> None:
    """Publishing works and the sent log refuses every line: "marking sent" is named."""
    refuse = [
        "CREATE OR REPLACE FUNCTION hexa_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the sent log refuses writes (test)'; END $$",
        "CREATE TRIGGER hexa_test_refuse BEFORE INSERT ON hexa_outbox_sent "
        "FOR EACH STATEMENT EXECUTE FUNCTION hexa_test_refuse()",
    ]
    engine = create_engine(sync_url(pg_url))
    try:
        with engine.begin() as conn:
            for sql in refuse:
                conn.execute(text(sql))
        emit(pg_url, 3)
        driver = RecordingDriver()
        relay = OutboxRelay(pg_url, driver, **{**FAST, "lease": 0.2})
        async with relay, running(relay):
            health = await failing(relay, "marking sent")
            assert not health["healthy"]
            assert "refuses writes" in health["mark_error"]
            assert health["publish_error"] == ""
            with engine.begin() as conn:
                conn.execute(text("DROP TRIGGER hexa_test_refuse ON hexa_outbox_sent"))
            await eventually(check(relay, lambda h: h["healthy"]), what="healthy again")
            await eventually(
                lambda: rows(pg_url, "SELECT count(*) FROM hexa_outbox") == [(0,)],
                what="marked sent",
            )
    finally:  # a failure above must not leave the trigger to fail this worker's later tests
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS hexa_test_refuse ON hexa_outbox_sent"))
        engine.dispose()


async def test_cleaners_whose_runs_fail_turn_unhealthy_then_recover(empty_db: str) -> None:
    outbox_cleaner = OutboxCleaner(empty_db, interval=0.05, unhealthy_after=0.3)
    inbox_cleaner = InboxCleaner(empty_db, interval=0.05, unhealthy_after=0.3)
    assert outbox_cleaner.health()["state"] == "new"
    async with outbox_cleaner, inbox_cleaner:
        async with running(outbox_cleaner), running(inbox_cleaner):
            for cleaner, table in ((outbox_cleaner, "hexa_outbox"), (inbox_cleaner, "hexa_inbox")):
                health = await failing(cleaner, "cleaning")
                assert health["cleaner"].endswith(f"of {table}")
                assert "cleaning has failed" in health["reason"], health
                assert table in health["error"]
                assert health["last_cleaned_age"] is None
            migrate(empty_db)
            migrate_inbox(empty_db)
            for cleaner in (outbox_cleaner, inbox_cleaner):
                await eventually(check(cleaner, lambda h: h["healthy"]), what="healthy again")
                health = cleaner.health()
                assert health["error"] == ""
                assert health["last_cleaned_age"] is not None
        assert outbox_cleaner.health()["state"] == "stopped"
    assert inbox_cleaner.health()["state"] == "closed"


async def test_unhealthy_after_must_be_a_positive_number(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="unhealthy_after"):
            OutboxRelay(url, RecordingDriver(), unhealthy_after=bad)
        with pytest.raises(ConfigurationError, match="unhealthy_after"):
            OutboxCleaner(url, unhealthy_after=bad)
    with pytest.raises(ConfigurationError, match="stats_interval"):
        OutboxRelay(url, RecordingDriver(), stats_interval=0)
