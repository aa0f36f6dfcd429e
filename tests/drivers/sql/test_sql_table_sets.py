"""Table sets of the SQL driver: ``schema`` and ``table_prefix`` keep services apart in one
database (events, positions, wake-ups), and bad names are refused before any SQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, make_url, text

from db_helpers import create_pg_database, drop_pg_database
from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver, SqlOptions, ddl, metadata, migrate
from hexa_event.drivers.sql.options import DERIVED_NAMES
from hexa_event.errors import ConfigurationError
from hexa_event_services import require_service

FAST = {"heartbeat_interval": 0.2, "lease_ttl": 2.0, "poll_interval": 0.02}


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pg_db() -> Iterator[str]:
    require_service("postgres")
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def sync_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def tables_in(url: str, schema: str | None = None) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names(schema=schema))
    finally:
        engine.dispose()


async def publish(driver: SqlDriver, channel: str, *bodies: bytes) -> None:
    await driver.publish([RawRecord(channel, f"k{i}", {}, body) for i, body in enumerate(bodies)])


async def read_all(driver: SqlDriver, channel: str, want: int, within: float = 20.0) -> list[bytes]:
    """Bodies of ``channel`` read by a new group until ``want`` arrived (or the deadline),
    then a short extra look for anything more."""
    sub = await driver.subscribe(SubscriptionSpec(group=unique("g"), channels=(channel,)))
    got: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(got) < want and loop.time() < deadline:
            try:
                async with asyncio.timeout(max(0.01, deadline - loop.time())):
                    batch = await sub.fetch(100)
            except TimeoutError:
                break
            for delivery in batch:
                got.append(delivery.record.body)
                delivery.ack()
            await sub.settle(batch)
        try:  # nothing more than wanted
            async with asyncio.timeout(0.5):
                got += [d.record.body for d in await sub.fetch(100)]
        except TimeoutError:
            pass
    finally:
        await sub.close()
    return got


@pytest.fixture
async def closing() -> AsyncIterator[list[SqlDriver]]:
    drivers: list[SqlDriver] = []
    yield drivers
    for driver in drivers:
        await driver.close()


# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"table_prefix": 'x"; drop table y; --'}, "table_prefix 'x\"; drop table y; --'"),
        ({"schema": 'x"; drop table y; --'}, "schema"),
        ({"schema": "Billing"}, "lowercase letters"),
        ({"table_prefix": "1st_"}, "starting with a letter"),
        ({"schema": "pg_mine"}, "reserved"),
        ({"table_prefix": "p" * 41}, "at most 40 characters"),
        ({"schema": "s" * 64}, "shorter schema"),
        ({"schema": "s" * 50, "table_prefix": "p" * 10}, "LISTEN/NOTIFY channel"),
    ],
)
def test_bad_names_are_refused_naming_the_option(options: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SqlOptions(url="postgresql://u@h/db", **options)


def test_bad_names_in_the_url_query_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="SqlOptions table_prefix"):
        SqlDriver.from_url("sqlite:///x.db?table_prefix=x%22%3B%20drop%20table%20y%3B%20--")
    # Given twice, the keyword wins (the one rule of every driver's options).
    assert SqlOptions(url="postgresql://u@h/db?schema=b", schema="a").schema == "a"
    with pytest.raises(ConfigurationError, match="SqlOptions schema 'B'"):
        SqlOptions(url="postgresql://u@h/db?schema=B")


def test_a_schema_on_sqlite_is_refused_with_advice(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"schemas are PostgreSQL only.*table_prefix"):
        SqlDriver.from_url(f"sqlite:///{tmp_path / 'a.db'}?schema=billing")
    with pytest.raises(ConfigurationError, match="PostgreSQL only"):
        ddl("sqlite", schema="billing")


def test_the_longest_prefix_allowed_fits_every_derived_name() -> None:
    longest = max(len(name) for name in DERIVED_NAMES)
    prefix = "p" * (63 - longest)
    options = SqlOptions(url="postgresql://u@h/db", table_prefix=prefix)
    md = metadata("postgresql", table_prefix=options.table_prefix)
    names = [t.name for t in md.tables.values()]
    names += [str(i.name) for t in md.tables.values() for i in t.indexes]
    assert max(len(n) for n in names) <= 63
    # Every table and index name the metadata makes is one the length check counts.
    assert {n[len(prefix) :] for n in names} <= set(DERIVED_NAMES)


def test_url_query_options_leave_the_url_the_engine_sees() -> None:
    options = SqlOptions(url="postgresql://u@h/db?sslmode=disable&schema=billing&table_prefix=b_")
    assert options.url == "postgresql://u@h/db?sslmode=disable"
    assert (options.schema, options.table_prefix) == ("billing", "b_")
    assert SqlOptions(url="sqlite:////abs/app.db?table_prefix=b_").url == "sqlite:////abs/app.db"


def test_ddl_names_the_schema_and_prefix_everywhere() -> None:
    out = ddl("postgresql", schema="billing", table_prefix="b_")
    assert "CREATE SCHEMA IF NOT EXISTS billing;" in out
    assert "CREATE TABLE billing.b_hexa_log" in out
    assert "CREATE INDEX b_hexa_log_by_partition ON billing.b_hexa_log" in out
    assert "hexa_log " not in out.replace("b_hexa_log", "")
    assert "CREATE TABLE hexa_log" in ddl("postgresql")  # the default is unchanged


# -- SQLite: prefixes -------------------------------------------------------------------------


async def test_prefixed_drivers_share_a_sqlite_file_without_seeing_each_other(
    tmp_path: Path, closing: list[SqlDriver]
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = SqlDriver.from_url(f"{url}?table_prefix=a_", **FAST)
    b = SqlDriver.from_url(url, table_prefix="b_", **FAST)
    plain = SqlDriver.from_url(url, **FAST)
    closing += [a, b, plain]
    await publish(a, "orders", b"a1", b"a2")
    await publish(b, "orders", b"b1")
    await publish(plain, "orders", b"p1")
    assert sorted(await read_all(a, "orders", 2)) == [b"a1", b"a2"]
    assert await read_all(b, "orders", 1) == [b"b1"]
    assert await read_all(plain, "orders", 1) == [b"p1"]
    tables = tables_in(url)
    assert {"a_hexa_log", "a_hexa_positions", "b_hexa_log", "hexa_log"} <= tables
    # Positions and prune stay in their set.
    assert await a.prune(0) == 2
    assert await read_all(b, "orders", 1) == [b"b1"]


async def test_migrate_creates_a_prefixed_set(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert await migrate(f"{url}?table_prefix=m_", partitions=4) == 4
    tables = tables_in(url)
    assert "m_hexa_meta" in tables
    assert "hexa_meta" not in tables


# -- PostgreSQL: schemas and prefixes in one database ---------------------------------------------


@pytest.mark.postgres
async def test_schemas_and_prefixes_share_a_postgres_database(
    pg_db: str, closing: list[SqlDriver]
) -> None:
    s1, s2, prefix = unique("s"), unique("s"), unique("p") + "_"
    drivers = {
        "s1": SqlDriver.from_url(f"{pg_db}?schema={s1}", **FAST),
        "s2": SqlDriver.from_url(pg_db, schema=s2, **FAST),
        "prefixed": SqlDriver.from_url(pg_db, table_prefix=prefix, **FAST),
        "both": SqlDriver.from_url(pg_db, schema=s1, table_prefix=prefix, **FAST),
    }
    closing += drivers.values()
    for name, driver in drivers.items():
        await publish(driver, "orders", name.encode())
    for name, driver in drivers.items():
        assert await read_all(driver, "orders", 1) == [name.encode()], name
    assert {"hexa_log", f"{prefix}hexa_log"} <= tables_in(pg_db, s1)
    assert "hexa_log" in tables_in(pg_db, s2)
    assert f"{prefix}hexa_log" in tables_in(pg_db)
    engine = create_engine(sync_url(pg_db))
    with engine.connect() as conn:
        sequences = set(
            conn.execute(
                text("SELECT sequencename FROM pg_sequences WHERE schemaname = :s"), {"s": s1}
            ).scalars()
        )
    engine.dispose()
    assert {"hexa_log_id_seq", f"{prefix}hexa_log_id_seq"} <= sequences


@pytest.mark.postgres
async def test_notify_wakes_only_the_drivers_of_the_same_table_set(
    pg_db: str, closing: list[SqlDriver]
) -> None:
    """A listening driver is woken by publishes to its own schema from another driver
    (no missed wake-up), never by another schema's publishes."""
    mine, other = unique("s"), unique("s")
    slow = {**FAST, "poll_interval": 30.0, "max_poll_interval": 30.0}
    listener = SqlDriver.from_url(pg_db, schema=mine, **slow)
    same = SqlDriver.from_url(pg_db, schema=mine, **slow)
    foreign = SqlDriver.from_url(pg_db, schema=other, **slow)
    closing += [listener, same, foreign]
    seen: list[set[str] | None] = []
    connected = asyncio.Event()
    woken = asyncio.Event()

    def watcher(channels: set[str] | None) -> None:
        seen.append(channels)
        if channels is None:
            connected.set()
        elif "mine" in channels:
            woken.set()

    listener.watchers.add(watcher)
    sub = await listener.subscribe(SubscriptionSpec(group=unique("g"), channels=("mine",)))
    try:
        await asyncio.wait_for(connected.wait(), 20)
        await publish(foreign, "theirs", b"x")  # committed first: its NOTIFY would come first
        await publish(same, "mine", b"y")
        await asyncio.wait_for(woken.wait(), 20)
        assert all(channels is None or "theirs" not in channels for channels in seen), seen
        async with asyncio.timeout(20):
            batch = await sub.fetch(10)
        assert [d.record.body for d in batch] == [b"y"]
    finally:
        await sub.close()


@pytest.mark.postgres
async def test_a_reserved_word_schema_is_quoted_in_every_statement(
    pg_db: str, closing: list[SqlDriver]
) -> None:
    """``select`` passes the name rules; the raw statements (insert, read, prune) quote it."""
    driver = SqlDriver.from_url(pg_db, schema="select", table_prefix=unique("p") + "_", **FAST)
    closing.append(driver)
    await publish(driver, "orders", b"q")
    assert await read_all(driver, "orders", 1) == [b"q"]
    assert await driver.prune(0) == 1
