"""Outbox and inbox table sets: ``schema``/``table_prefix`` keep services apart in one
database (rows, relays, stats, cleaners, dedup records, NOTIFY wake-ups); bad names are
refused before any SQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Table, create_engine, func, make_url, select, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from db_helpers import RecordingDriver, rows
from hexa_event import Context, Event
from hexa_event._sql.clock import utcnow
from hexa_event._sql.urls import async_url
from hexa_event.errors import ConfigurationError
from hexa_event.inbox import Inbox, InboxCleaner
from hexa_event.inbox import migrate_async as inbox_migrate
from hexa_event.inbox import table_for as inbox_table_for
from hexa_event.outbox import (
    Outbox,
    OutboxCleaner,
    OutboxRelay,
    ddl,
    migrate,
    migrate_async,
    notify_channel,
    outbox_stats,
    outbox_table,
    sent_table,
    table_for,
)
from hexa_event.testing import eventually

INJECTION = 'x"; drop table y; --'


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def sets(dialect_url: str) -> list[dict[str, Any]]:
    """Two prefixed sets, plus (PostgreSQL) two schemas and a schema with a prefix."""
    found: list[dict[str, Any]] = [
        {"table_prefix": unique("a") + "_"},
        {"table_prefix": unique("b") + "_"},
    ]
    if not dialect_url.startswith("sqlite"):
        schema = unique("s")
        found += [
            {"schema": schema},
            {"schema": unique("s")},
            {"schema": schema, "table_prefix": unique("c") + "_"},
        ]
    return found


def emit(url: str, outbox: Outbox, count: int, tag: str) -> list[str]:
    sync = make_url(url)
    if sync.drivername in ("postgresql", "postgres"):
        sync = sync.set(drivername="postgresql+psycopg")
    engine = create_engine(sync)
    try:
        with engine.begin() as conn:
            return outbox.emit_many(
                conn, [Event("c", f"{tag}{i}", payload=i) for i in range(count)]
            )
    finally:
        engine.dispose()


def ctx(event_id: str, action: str = "billing.charge") -> Context:
    return Context(event_id=event_id, handler_action=action)


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Outbox(table_prefix=INJECTION), "Outbox table_prefix .* lowercase letters"),
        (lambda: Outbox(schema=INJECTION), "Outbox schema .* lowercase letters"),
        (
            lambda: OutboxRelay("sqlite:///x.db", RecordingDriver(), table_prefix=INJECTION),
            "OutboxRelay table_prefix .* lowercase letters",
        ),
        (
            lambda: OutboxCleaner("sqlite:///x.db", table_prefix="Upper_"),
            "OutboxCleaner table_prefix 'Upper_' .* lowercase letters",
        ),
        (lambda: Inbox("sqlite:///x.db", table_prefix=INJECTION), "Inbox table_prefix"),
        (
            lambda: InboxCleaner("sqlite:///x.db", table_prefix=INJECTION),
            "InboxCleaner table_prefix .* lowercase letters",
        ),
        (lambda: table_for(table_prefix="p" * 40), "at most 38 characters"),
        (lambda: inbox_table_for(schema="pg_catalog"), "reserved by PostgreSQL"),
        (lambda: ddl("postgresql", table_prefix="-x"), "starting with a letter"),
    ],
)
def test_bad_names_are_refused(make: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()


def test_messages_name_what_to_change() -> None:
    with pytest.raises(ConfigurationError, match=r"OutboxRelay table_prefix .*lowercase letters"):
        OutboxRelay("sqlite:///x.db", RecordingDriver(), table_prefix=INJECTION)
    with pytest.raises(ConfigurationError, match="use a prefix of at most 38 characters"):
        table_for(table_prefix="p" * 39)  # ix_hexa_outbox_key_unsent: 25 + 39 > 63
    with pytest.raises(ConfigurationError, match=r"PostgreSQL only.*table_prefix"):
        OutboxRelay("sqlite:///x.db", RecordingDriver(), schema="billing")
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        Inbox("sqlite:///x.db", schema="billing")
    with pytest.raises(ConfigurationError, match="either table= or schema="):
        Outbox(schema="billing", table=outbox_table)


def test_table_sets_are_built_once_and_the_default_is_unchanged() -> None:
    assert table_for() is outbox_table
    assert table_for("billing", "b_") is table_for("billing", "b_")
    t = table_for("billing", "b_")
    assert (t.schema, t.name, notify_channel(t)) == (
        "billing",
        "b_hexa_outbox",
        "billing.b_hexa_outbox",
    )
    assert notify_channel(outbox_table) == "hexa_outbox"
    out = ddl("postgresql", schema="billing", table_prefix="b_")
    assert "CREATE SCHEMA IF NOT EXISTS billing;" in out
    assert "CREATE INDEX ix_b_hexa_outbox_unsent ON billing.b_hexa_outbox" in out
    assert "CREATE TABLE hexa_outbox" in ddl("postgresql")


async def test_emit_with_a_schema_on_sqlite_is_refused(tmp_path: Any) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        async with engine.begin() as conn:
            with pytest.raises(ConfigurationError, match="PostgreSQL only"):
                await Outbox(schema="billing").emit_async(conn, Event("c", "k", payload=1))
    finally:
        await engine.dispose()


# -- outbox: rows, relay, stats, cleaner --------------------------------------------------------


@pytest.mark.parametrize("mode", [None, "lease"])
async def test_relays_stats_and_cleaners_stay_in_their_table_set(
    db_url: str, mode: str | None
) -> None:
    found = sets(db_url)
    emitted: list[list[str]] = []
    for n, names in enumerate(found):
        await migrate_async(db_url, **names)
        emitted.append(emit(db_url, Outbox(**names), n + 1, f"set{n}-"))
    emit(db_url, Outbox(), 7, "default-")  # the default table: never touched below

    for n, names in enumerate(found):
        driver = RecordingDriver()
        async with OutboxRelay(db_url, driver, claim_mode=mode, **names) as relay:
            stats = await relay.stats()
            assert stats.backlog == n + 1, names
            assert await relay.drain(max_seconds=30) == n + 1
            assert driver.ids() == emitted[n], names
            assert (await relay.stats()).backlog == 0

    engine = create_async_engine(async_url(db_url))
    try:
        assert (await outbox_stats(engine)).backlog == 7
        for names in found:
            table = table_for(**names)
            async with engine.begin() as conn:
                old = utcnow() - timedelta(days=2)
                await conn.execute(update(sent_table(table)).values(sent_at=old))
        first = found[0]
        async with OutboxCleaner(engine, retention=timedelta(days=1), **first) as cleaner:
            assert await cleaner.run_once() == 1
        async with OutboxCleaner(engine, retention=timedelta(days=1), **found[1]) as cleaner:
            assert await cleaner.run_once() == 2
    finally:
        await engine.dispose()
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox WHERE sent_at IS NULL") == [(7,)]


async def _count(url: str, table: Table) -> int:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
    finally:
        await engine.dispose()


# -- inbox: dedup records ---------------------------------------------------------------------


async def test_inboxes_keep_their_dedup_records_apart(db_url: str) -> None:
    found = sets(db_url)
    inboxes = []
    for names in found:
        await inbox_migrate(db_url, **names)
        inboxes.append(Inbox(db_url, **names))
    default = Inbox(db_url)
    ran: list[int] = []
    try:
        for n, inbox in enumerate(inboxes):

            async def effects(_session: AsyncSession, n: int = n) -> None:
                ran.append(n)

            assert (await inbox.run(ctx("ev-1"), effects))[0] is True
            assert (await inbox.run(ctx("ev-1"), effects))[0] is False  # a duplicate here
        assert ran == list(range(len(inboxes)))
        assert not await default.seen(ctx("ev-1"))
        for inbox in inboxes:
            assert await inbox.seen(ctx("ev-1"))
            assert await _count(db_url, inbox.table) == 1
        old = utcnow() - timedelta(days=2)
        engine = create_async_engine(async_url(db_url))
        try:
            async with engine.begin() as conn:
                await conn.execute(update(inboxes[0].table).values(processed_at=old))
        finally:
            await engine.dispose()
        async with InboxCleaner(db_url, retention=timedelta(days=1), **found[1]) as cleaner:
            assert await cleaner.run_once() == 0  # its records are new; set 0's are not its
        async with InboxCleaner(db_url, retention=timedelta(days=1), **found[0]) as cleaner:
            assert await cleaner.run_once() == 1
        assert await _count(db_url, inboxes[1].table) == 1
    finally:
        for inbox in [*inboxes, default]:
            await inbox.close()


# -- PostgreSQL: NOTIFY channels -------------------------------------------------------------------


@pytest.mark.postgres
async def test_notify_reaches_only_the_relays_of_the_same_outbox(pg_url: str) -> None:
    """A relay polling once a minute is woken by its own outbox's commits (no missed
    wake-up) and its channel hears nothing of another schema's or prefix's commits."""
    import asyncpg

    mine = {"schema": unique("s")}
    others = [{"schema": unique("s")}, {"table_prefix": unique("p") + "_"}, {}]
    for names in [mine, *others]:
        await migrate_async(pg_url, **names)
    heard: list[str] = []
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    listener = await asyncpg.connect(plain)
    await listener.add_listener(
        notify_channel(table_for(**mine)), lambda *args: heard.append(args[2])
    )
    driver = RecordingDriver()
    relay = OutboxRelay(pg_url, driver, poll_interval=60.0, **mine)
    task = asyncio.create_task(relay.run())
    engine = create_async_engine(async_url(pg_url))
    try:
        await asyncio.wait_for(relay.listening.wait(), 20)
        for names in others:  # committed before ours: their NOTIFYs would arrive first
            async with engine.begin() as conn:
                await Outbox(**names).emit_async(conn, Event("c", "k", payload=0))
        async with engine.begin() as conn:
            sent = await Outbox(**mine).emit_async(conn, Event("c", "k", payload=1))
        await asyncio.wait_for(driver.changed.wait(), 20)
        assert driver.ids() == [sent]
        await eventually(lambda: bool(heard), what="our own NOTIFY", within=20)
        assert heard == [f"{mine['schema']}.hexa_outbox"]
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await relay.close()
        await engine.dispose()
        await listener.close()


@pytest.mark.postgres
def test_concurrent_first_migrations_of_a_schema_all_succeed(pg_url: str) -> None:
    """Several processes starting at once each run migrate(): creating the schema races in
    PostgreSQL (IF NOT EXISTS is not atomic); the losers must not fail."""
    import threading

    engine = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg"), pool_size=8)
    errors: list[str] = []
    try:
        for _ in range(5):
            schema = unique("race")
            barrier = threading.Barrier(4)

            def run(schema: str = schema, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                try:
                    migrate(engine, schema=schema)
                except Exception as exc:
                    errors.append(str(exc).splitlines()[0])

            threads = [threading.Thread(target=run) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    finally:
        engine.dispose()
    assert errors == []
