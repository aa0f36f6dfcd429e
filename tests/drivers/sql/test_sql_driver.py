"""The SQL driver through its contract: groups across processes, crashes, late commits,
durable nack delays, retry-at times, positions under out-of-order settles."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

import hexa_event
from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.sql import SqlDriver, SqlOptions, ddl, migrate
from hexa_event.drivers.sql.producer import to_rows
from hexa_event.drivers.sql.schema import async_url, make_engine
from hexa_event.errors import ConfigurationError
from hexa_event.testing.waiting import eventually

MEMBER = Path(__file__).with_name("_member.py")
SRC = Path(__file__).resolve().parents[3] / "src"
FAST = {"lease_ttl": 3.0, "heartbeat_interval": 0.2}


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    from hexa_event_services import require_service

    return require_service("postgres").url


@pytest.fixture
async def driver(url: str) -> AsyncIterator[SqlDriver]:
    d = hexa_event.connect(url, **FAST).driver
    assert isinstance(d, SqlDriver)
    yield d
    await d.close()


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"ch-{tag}", f"grp-{tag}"


def records(channel: str, count: int, keys: int = 50) -> list[RawRecord]:
    return [
        RawRecord(channel, f"k{i % keys}", {"n": str(i).encode()}, f"{i}".encode())
        for i in range(count)
    ]


async def fetch_some(sub: Subscription, within: float = 20.0) -> list[Delivery]:
    return list(await asyncio.wait_for(sub.fetch(1000), within))


async def drain(sub: Subscription, count: int, within: float = 20.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + within
    while len(got) < count:
        got.extend(await asyncio.wait_for(sub.fetch(1000), max(0.1, deadline - time.monotonic())))
    return got


# -- several processes ----------------------------------------------------------------------


class Member:
    def __init__(self, url: str, channel: str, group: str, out: Path, seconds: float = 0) -> None:
        self.out = out
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            [sys.executable, str(MEMBER), url, channel, group, str(out), str(seconds)], env=env
        )

    def lines(self) -> list[str]:
        if not self.out.exists():
            return []
        return self.out.read_text().splitlines()

    def handled(self) -> list[str]:
        return [line for line in self.lines() if line and not line.startswith("#")]

    def parts(self) -> int:
        reports = [line for line in self.lines() if line.startswith("#parts ")]
        return int(reports[-1].split()[1]) if reports else -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


@pytest.fixture
def members() -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for member in started:
        if member.proc.poll() is None:
            member.proc.kill()
            member.proc.wait(10)


async def test_two_processes_share_a_group_and_never_both_handle_one_event(
    url: str, driver: SqlDriver, members: list[Member], tmp_path: Path
) -> None:
    channel, group = names()
    await driver.provision([channel])
    a = Member(url, channel, group, tmp_path / "a.txt")
    b = Member(url, channel, group, tmp_path / "b.txt")
    members += [a, b]
    await eventually(lambda: a.parts() == 8 and b.parts() == 8, within=60, what="a fair split")
    count = 2000
    await driver.publish(records(channel, count, keys=200))
    want = {str(i) for i in range(count)}
    await eventually(
        lambda: set(a.handled()) | set(b.handled()) >= want, within=60, what="all events"
    )
    a.stop()
    b.stop()
    got_a, got_b = a.handled(), b.handled()
    assert len(got_a) == len(set(got_a)), "a duplicate"
    assert len(got_b) == len(set(got_b)), "a duplicate"
    assert not set(got_a) & set(got_b), "both members handled one event"
    assert got_a
    assert got_b
    assert len(got_a) + len(got_b) == count


async def test_a_member_killed_mid_batch_loses_nothing(
    url: str, driver: SqlDriver, members: list[Member], tmp_path: Path
) -> None:
    channel, group = names()
    count = 600
    await driver.publish(records(channel, count))
    first = Member(url, channel, group, tmp_path / "first.txt", seconds=0.002)
    members.append(first)
    await eventually(lambda: len(first.handled()) >= 100, within=60, what="a first share")
    first.proc.kill()  # SIGKILL: no close, no final ack flush
    first.proc.wait(10)
    assert len(first.handled()) < count
    second = Member(url, channel, group, tmp_path / "second.txt")
    members.append(second)
    want = {str(i) for i in range(count)}
    await eventually(
        lambda: set(first.handled()) | set(second.handled()) >= want,
        within=60,
        what="every event after the crash",
    )
    second.stop()


# -- one process ------------------------------------------------------------------------------


async def test_two_members_split_partitions_and_keep_key_order(driver: SqlDriver) -> None:
    channel, group = names()
    spec = SubscriptionSpec(group=group, channels=(channel,))
    one = await driver.subscribe(spec)
    two = await driver.subscribe(spec)
    await driver.publish(records(channel, 400, keys=40))
    seen: dict[str, list[int]] = {}
    owner: dict[str, int] = {}

    async def consume(n: int, sub: Subscription) -> None:
        while sum(len(v) for v in seen.values()) < 400:
            try:
                batch = await asyncio.wait_for(sub.fetch(100), 0.5)
            except TimeoutError:
                continue
            for d in batch:
                seen.setdefault(d.record.key, []).append(int(d.record.body))
                owner.setdefault(d.record.key, n)
                d.ack()
            await sub.settle(batch)

    await asyncio.wait_for(asyncio.gather(consume(1, one), consume(2, two)), 60)
    for key, values in seen.items():
        assert values == sorted(values), f"{key} out of order"
    assert sorted(v for vs in seen.values() for v in vs) == list(range(400))
    await one.close()
    await two.close()


async def test_settling_out_of_order_never_moves_the_position_past_a_pending_record(
    driver: SqlDriver, url: str
) -> None:
    channel, group = names()
    await driver.publish(records(channel, 3, keys=1))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    batch = await drain(sub, 3)
    assert [d.record.body for d in batch] == [b"0", b"1", b"2"]
    batch[2].ack()
    batch[1].ack()  # record 0 is still pending
    await sub.settle(batch[1:])
    await sub.close()
    other = hexa_event.connect(url, **FAST)
    try:
        again = await other.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        redelivered = await drain(again, 1)
        assert redelivered[0].record.body == b"0"
        for d in redelivered:
            d.ack()
        await again.settle(redelivered)
        await again.close()
    finally:
        await other.close()


async def test_nack_with_delay_is_durable_and_honoured(driver: SqlDriver, url: str) -> None:
    channel, group = names()
    await driver.publish(records(channel, 1))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    [delivery] = await drain(sub, 1)
    nacked_at = time.monotonic()
    delivery.nack(1.5)
    await sub.settle([delivery])
    await sub.close()  # this member goes away; the database keeps the redelivery
    other = hexa_event.connect(url, **FAST)
    try:
        again = await other.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        [back] = await drain(again, 1)
        assert time.monotonic() - nacked_at >= 1.4
        assert back.record.body == b"0"
        assert back.delivery_count == 2
        back.ack()
        await again.settle([back])
        await again.close()
    finally:
        await other.close()


async def test_records_are_not_handed_out_before_their_not_before_time(
    driver: SqlDriver,
) -> None:
    assert driver.features.delayed_publish
    assert driver.features.delayed_nack
    channel, group = names()
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    due = time.time() + 1.0
    await driver.publish([RawRecord(channel, "k", {}, b"x", not_before=due)])
    [delivery] = await drain(sub, 1)
    assert time.time() >= due - 0.01
    delivery.ack()
    await sub.settle([delivery])
    await sub.close()


async def test_a_retry_at_header_is_just_a_header(driver: SqlDriver) -> None:
    """Only ``not_before`` holds a record back; the core's headers mean nothing here."""
    channel, group = names()
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    later = str(int((time.time() + 60) * 1000)).encode()
    await driver.publish([RawRecord(channel, "k", {"HEXA_RETRY_AT": later}, b"x")])
    [delivery] = await drain(sub, 1, within=10)
    delivery.ack()
    await sub.settle([delivery])
    await sub.close()


async def test_start_latest_skips_history_and_groups_are_independent(driver: SqlDriver) -> None:
    channel, group = names()
    await driver.publish(records(channel, 5))
    latest = await driver.subscribe(
        SubscriptionSpec(group=group + "-new", channels=(channel,), start="latest")
    )
    earliest = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    await driver.publish([RawRecord(channel, "k", {}, b"fresh")])
    assert [d.record.body for d in await drain(latest, 1)] == [b"fresh"]
    assert len(await drain(earliest, 6)) == 6
    await latest.close()
    await earliest.close()


async def test_late_committing_transaction_is_not_skipped(url: str) -> None:
    """PostgreSQL: a row whose transaction took its id early and commits late is delivered."""
    if not url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: ids follow commit order")
    channel, group = names()
    driver = hexa_event.connect(url, **FAST).driver
    assert isinstance(driver, SqlDriver)
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    engine = make_engine(SqlOptions(url=url))
    cols = "channel, part, msg_key, headers, body, created_ms, visible_ms"
    try:
        async with engine.connect() as slow:
            # This transaction takes an id now and commits after a later one.
            [row] = to_rows([RawRecord(channel, "a", {}, b"early-id")], 16)
            await slow.execute(
                text(f"INSERT INTO hexa_log ({cols}) VALUES (:c, :p, :k, :h, :b, :t, :v)"),
                dict(zip("cpkhbtv", row, strict=True)),
            )
            await driver.publish([RawRecord(channel, "b", {}, b"later-id")])
            # While the early transaction runs, nothing past it is handed out.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sub.fetch(10), 1.0)
            await slow.commit()
        got = await drain(sub, 2)
        assert sorted(d.record.body for d in got) == [b"early-id", b"later-id"]
        for d in got:
            d.ack()
        await sub.settle(got)
        await sub.close()
        again = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        await driver.publish([RawRecord(channel, "c", {}, b"next")])
        assert [d.record.body for d in await drain(again, 1)] == [b"next"]
        await again.close()
    finally:
        await engine.dispose()
        await driver.close()


async def test_notify_wakes_consumers_of_other_processes(url: str) -> None:
    """PostgreSQL: a publish from another driver (process) wakes an idle consumer at once,
    long before its next poll."""
    if not url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    channel, group = names()
    slow_polling = {**FAST, "poll_interval": 30.0, "max_poll_interval": 30.0}
    consumer = hexa_event.connect(url, **slow_polling)
    producer = hexa_event.connect(url, **FAST)
    try:
        await producer.provision([channel])
        sub = await consumer.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        idle = asyncio.create_task(sub.fetch(10))
        await eventually(lambda: consumer.driver._listener is not None, what="the listener")  # type: ignore[attr-defined]
        began = time.monotonic()
        await producer.publish([RawRecord(channel, "k", {}, b"wake")])
        got = await asyncio.wait_for(idle, 10)
        assert [d.record.body for d in got] == [b"wake"]
        assert time.monotonic() - began < 10
        await sub.close()
    finally:
        await producer.close()
        await consumer.close()


async def test_pattern_subscription_picks_up_new_channels(driver: SqlDriver) -> None:
    base, group = names()
    sub = await driver.subscribe(SubscriptionSpec(group=group, pattern=rf"{base}\.\w+"))
    await driver.publish([RawRecord(f"{base}.x", "k", {}, b"1"), RawRecord("other", "k", {}, b"2")])
    got = await drain(sub, 1)
    assert [d.record.channel for d in got] == [f"{base}.x"]
    await sub.close()


async def test_prune_deletes_only_what_every_group_settled(driver: SqlDriver) -> None:
    channel, group = names()
    await driver.publish(records(channel, 4, keys=1))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    batch = await drain(sub, 4)
    batch[0].ack()
    batch[1].ack()
    await sub.settle(batch[:2])
    await sub.close()  # the stored position is now after record 1
    assert await driver.prune(0, channels=[channel]) == 2
    again = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    rest = await drain(again, 2)
    assert [d.record.body for d in rest] == [b"2", b"3"]
    await again.close()


# -- schema, options, URLs ------------------------------------------------------------------


def test_ddl_lists_every_table_for_both_dialects() -> None:
    for dialect in ("postgresql", "sqlite"):
        text_ = ddl(dialect)
        for table in ("hexa_log", "hexa_positions", "hexa_members", "hexa_redeliveries"):
            assert f"CREATE TABLE {table}" in text_
    assert "pg_current_xact_id" in ddl("postgresql")
    with pytest.raises(ConfigurationError):
        ddl("oracle")


async def test_migrate_is_idempotent_and_keeps_the_partition_count(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert await migrate(url, partitions=8) == 8
    assert await migrate(url, partitions=32) == 8
    d = hexa_event.connect(url, partitions=32).driver
    assert isinstance(d, SqlDriver)
    assert await d.ready() == 8
    await d.close()


async def test_from_engine_uses_the_callers_engine(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'own.db'}")
    driver = SqlDriver.from_engine(engine, **FAST)
    channel, group = names()
    await driver.publish(records(channel, 3))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await drain(sub, 3)
    assert sorted(d.record.body for d in got) == [b"0", b"1", b"2"]
    await sub.close()
    await driver.close()
    async with engine.connect() as conn:  # still usable: the caller owns it
        assert (await conn.execute(text("SELECT count(*) FROM hexa_log"))).scalar() == 3
    await engine.dispose()


async def test_a_fetch_reads_the_log_on_the_database_drivers_own_connection(
    driver: SqlDriver,
) -> None:
    """aiosqlite and asyncpg: the log is read with the database driver's own call (one call
    to aiosqlite's thread, no transaction around it on asyncpg), not through SQLAlchemy."""
    from sqlalchemy import event

    channel, group = names()
    await driver.publish(records(channel, 3))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    through_sqlalchemy: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "UNION ALL" in statement:
            through_sqlalchemy.append(statement)

    event.listen(driver.engine.sync_engine, "before_cursor_execute", seen)
    try:
        got = await drain(sub, 3)
    finally:
        event.remove(driver.engine.sync_engine, "before_cursor_execute", seen)
    assert sorted(d.record.body for d in got) == [b"0", b"1", b"2"]
    assert through_sqlalchemy == []
    await sub.close()


@pytest.mark.postgres
async def test_an_engine_on_another_database_driver_reads_through_sqlalchemy() -> None:
    """An engine on psycopg (neither aiosqlite nor asyncpg): publish, fetch, settle and a
    second member's fetch go through SQLAlchemy and keep every guarantee."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from hexa_event_services import require_service

    url = require_service("postgres").url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_async_engine(url)
    driver = SqlDriver.from_engine(engine, **FAST)
    channel, group = names()
    try:
        await driver.publish(records(channel, 5, keys=1))
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        got = await drain(sub, 5)
        assert [d.record.body for d in got] == [b"0", b"1", b"2", b"3", b"4"]
        for d in got[:3]:
            d.ack()
        await sub.settle(got[:3])
        await sub.close()
        again = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        assert [d.record.body for d in await drain(again, 2)] == [b"3", b"4"]
        await again.close()
    finally:
        await driver.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgresql_publish_is_one_insert_storing_rows_in_order() -> None:
    """asyncpg: a publish of many records is one INSERT of arrays (not the server running
    one INSERT per row), and the rows' ids follow the records' order."""
    from sqlalchemy import event

    from hexa_event_services import require_service

    d = hexa_event.connect(require_service("postgres").url, **FAST).driver
    assert isinstance(d, SqlDriver)
    channel, _ = names()
    inserts: list[bool] = []

    def seen(
        _conn: object, _cursor: object, statement: str, _p: object, _c: object, many: bool
    ) -> None:
        if statement.startswith("INSERT INTO hexa_log "):
            inserts.append(many)

    try:
        await d.publish(records(channel, 1))  # creates the tables and the channel first
        event.listen(d.engine.sync_engine, "before_cursor_execute", seen)
        await d.publish(records(channel, 300, keys=7))
        assert inserts == [False]
        async with d.engine.connect() as conn:
            query = text("SELECT body FROM hexa_log WHERE channel = :c ORDER BY id")
            bodies = (await conn.execute(query, {"c": channel})).scalars().all()
        assert bodies == [b"0"] + [str(i).encode() for i in range(300)]
    finally:
        await d.close()


def test_options_hide_the_password() -> None:
    opts = SqlOptions(url="postgresql://app:s3cret@db.example:5432/app")
    assert "s3cret" not in repr(opts)
    d = SqlDriver(opts)
    assert "s3cret" not in repr(d)
    err = d.error("publish", OSError("boom"))
    assert "s3cret" not in str(err)


def test_urls_map_to_async_dialects() -> None:
    assert async_url("sqlite:///data/app.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ConfigurationError, match="in-memory"):
        async_url("sqlite://")
    with pytest.raises(ConfigurationError, match="unknown SQL driver option"):
        hexa_event.connect("sqlite:///x.db", no_such_option=1)
    with pytest.raises(ConfigurationError):
        hexa_event.connect("sqlite:///x.db", lease_ttl=1.0, heartbeat_interval=1.0)


async def test_a_bad_pattern_is_a_configuration_error(driver: SqlDriver) -> None:
    with pytest.raises(ConfigurationError, match="regular expression"):
        await driver.subscribe(SubscriptionSpec(group="g", pattern="orders.(["))


def test_partition_of_is_stable() -> None:
    def partition_of(key: str, partitions: int) -> int:
        [row] = to_rows([RawRecord("c", key, {}, b"")], partitions)
        return int(row[1])

    assert partition_of("order-42", 16) == partition_of("order-42", 16)
    assert {partition_of(f"k{i}", 16) for i in range(200)} == set(range(16))


# -- contract v2: batch settle, status ----------------------------------------------------


async def _fail_position_writes(driver: SqlDriver, group: str, on: bool) -> None:
    """A trigger refusing position updates of ``group`` only (the database is shared)."""
    async with driver.engine.begin() as conn:
        if driver.dialect == "sqlite":
            if on:
                await conn.exec_driver_sql(
                    f"CREATE TRIGGER fail_{group.replace('-', '_')} BEFORE UPDATE ON "
                    f"hexa_positions WHEN NEW.group_name = '{group}' "
                    "BEGIN SELECT RAISE(FAIL, 'injected write failure'); END"
                )
            else:
                await conn.exec_driver_sql(f"DROP TRIGGER fail_{group.replace('-', '_')}")
            return
        name = f"fail_{group.replace('-', '_')}"
        if on:
            await conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'injected write failure'; END $$"
            )
            await conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON hexa_positions FOR EACH ROW "
                f"WHEN (NEW.group_name = '{group}') EXECUTE FUNCTION {name}()"
            )
        else:
            await conn.exec_driver_sql(f"DROP TRIGGER {name} ON hexa_positions")
            await conn.exec_driver_sql(f"DROP FUNCTION {name}()")


async def _stored(driver: SqlDriver, group: str) -> tuple[int, int]:
    async with driver.engine.connect() as conn:
        position = (
            await conn.execute(
                text("SELECT max(pos_id) FROM hexa_positions WHERE group_name = :g"), {"g": group}
            )
        ).scalar()
        waiting = (
            await conn.execute(
                text("SELECT count(*) FROM hexa_redeliveries WHERE group_name = :g"),
                {"g": group},
            )
        ).scalar()
    return int(position or 0), int(waiting or 0)


async def test_a_failed_settle_raises_and_the_same_batch_settles_later(driver: SqlDriver) -> None:
    from hexa_event.errors import DriverError

    channel, group = names()
    await driver.publish(records(channel, 3, keys=1))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    batch = await drain(sub, 3)
    await _fail_position_writes(driver, group, True)
    batch[0].ack()
    batch[1].nack(30)
    batch[2].ack()
    try:
        with pytest.raises(DriverError, match="injected write failure"):
            await sub.settle(batch)
        # Nothing of the batch was written: neither the position nor the redelivery.
        assert await _stored(driver, group) == (0, 0)
    finally:
        await _fail_position_writes(driver, group, False)
    await sub.settle(batch)
    last = batch[2].native["log_id"]  # type: ignore[index]
    assert await _stored(driver, group) == (last, 1)
    await sub.settle(batch)  # a third time: harmless
    assert await _stored(driver, group) == (last, 1)
    await sub.close()


async def test_status_names_the_partitions_held(driver: SqlDriver) -> None:
    channel, group = names()
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    status = sub.status()
    assert sorted(status.assignment) == sorted(f"{channel}-{n}" for n in range(16))
    assert status.error == ""
    await sub.close()
    assert sub.status().assignment == ()


async def test_a_delivery_names_its_row(driver: SqlDriver) -> None:
    """Coordinates ``<channel>-<partition>-<row id>`` and ``native`` agree with the row, for
    a first delivery and for one handed out again after a nack."""
    channel, group = names()
    await driver.publish(records(channel, 3))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await drain(sub, 3)
    for delivery in got:
        native = delivery.native
        assert isinstance(native, dict)
        expected = f"{channel}-{native['partition']}-{native['log_id']}"
        assert delivery.coordinates == expected
        assert delivery.timestamp is not None
        assert abs(delivery.timestamp - time.time()) < 60
    got[0].nack()
    await sub.settle([got[0]])
    again = await fetch_some(sub)
    assert [d.coordinates for d in again] == [got[0].coordinates]
    assert again[0].delivery_count == 2
    await sub.close()


# -- issue 9: poison records, outages, health, clean close ------------------------------


async def test_publish_refuses_header_values_that_are_not_bytes(driver: SqlDriver) -> None:
    """#1: a str or None header value is refused at publish, naming the header."""
    from hexa_event.errors import InvalidEventError

    channel, _ = names()
    await driver.provision([channel])
    for bad in ("text", None, 7):
        record = RawRecord(channel, "k", {"ok": b"1", "trace": bad}, b"x")  # type: ignore[dict-item]
        with pytest.raises(InvalidEventError, match="trace"):
            await driver.publish([record])
    with pytest.raises(InvalidEventError, match="not_before"):
        await driver.publish([RawRecord(channel, "k", {}, b"x", not_before=1e30)])
    async with driver.engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM hexa_log WHERE channel = :c"), {"c": channel}
            )
        ).scalar()
    assert stored == 0


async def test_a_row_with_undecodable_headers_is_delivered_not_skipped(
    driver: SqlDriver, url: str
) -> None:
    """#1: rows another writer stored with bad headers still reach the core, in order, and
    the stored position passes them once settled (nothing is redelivered forever)."""
    import msgspec

    channel, group = names()
    await driver.publish([RawRecord(channel, "k", {}, b"first")])
    [row] = to_rows([RawRecord(channel, "k", {}, b"x")], await driver.ready())
    cols = "channel, part, msg_key, headers, body, created_ms, visible_ms"
    insert = text(f"INSERT INTO hexa_log ({cols}) VALUES (:c, :p, :k, :h, :b, :t, :v)")
    async with driver.engine.begin() as conn:
        for headers, body in (
            (msgspec.msgpack.encode({"a": "text", "n": None, "b": b"raw"}), b"mixed"),
            (b"\xc1\xc1 not msgpack", b"garbage"),
        ):
            values = dict(zip("cpkhbtv", row, strict=True))
            await conn.execute(insert, {**values, "h": headers, "b": body})
    await driver.publish([RawRecord(channel, "k", {"h": b"v"}, b"last")])
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    got = await drain(sub, 4)
    assert [d.record.body for d in got] == [b"first", b"mixed", b"garbage", b"last"]
    assert got[1].record.headers == {"a": b"text", "b": b"raw"}
    assert got[2].record.headers == {}
    for d in got:
        d.ack()
    await sub.settle(got)
    await sub.close()
    again = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(again.fetch(10), 1.0)
    await again.close()


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("postgresql://postgres@[::1/db", "IPv6"),
        ("postgresql://postgres@db.example:99999/app", "port"),
        ("postgresql://postgres@db.example:notaport/app", "port"),
    ],
)
def test_bad_database_urls_name_what_to_change(bad: str, named: str) -> None:
    """#17: a ConfigurationError naming the fix, from the driver and from the outbox/inbox."""
    from hexa_event.inbox import Inbox
    from hexa_event.outbox import OutboxCleaner

    with pytest.raises(ConfigurationError, match=named):
        hexa_event.connect(bad)
    with pytest.raises(ConfigurationError, match=named):
        OutboxCleaner(bad)
    with pytest.raises(ConfigurationError, match=named):
        Inbox(bad)


async def test_acks_above_the_position_survive_a_clean_close(driver: SqlDriver, url: str) -> None:
    """#20: rows acked above an unsettled one are not delivered again after a clean close;
    the unsettled one is, and the position then moves past all of them."""
    channel, group = names()
    await driver.publish(records(channel, 5, keys=1))  # one key: one partition, in order
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    batch = await drain(sub, 5)
    for d in batch[1:]:
        d.ack()
    await sub.settle(batch[1:])
    await sub.close()  # batch[0] was never settled: it is given back
    other = hexa_event.connect(url, **FAST).driver
    try:
        again = await other.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        [back] = await drain(again, 1)
        assert back.record.body == b"0"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(again.fetch(10), 1.0)
        back.ack()
        await again.settle([back])
        await again.close()
        third = await other.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        await other.publish([RawRecord(channel, "k0", {}, b"next")])
        assert [d.record.body for d in await drain(third, 1)] == [b"next"]
        await third.close()
    finally:
        await other.close()


async def test_read_failures_surface_in_fetch_status_and_health(tmp_path: Path) -> None:
    """#11: a failing read (here the log table gone) is raised by fetch, shown by status()
    and by the receiver's health, and clears once reads work again."""
    from hexa_event.errors import DriverError

    url = f"sqlite:///{tmp_path / 'events.db'}"
    conn = hexa_event.connect(url, **FAST)
    driver = conn.driver
    assert isinstance(driver, SqlDriver)
    channel, group = names()
    await driver.publish(records(channel, 1))
    sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
    receiver = conn.receiver("svc")
    receiver.subscribe(channel, action=group + "-rcv", handler=lambda c, m: None)
    try:
        async with driver.engine.begin() as db:
            await db.exec_driver_sql("ALTER TABLE hexa_log RENAME TO hexa_log_away")
        with pytest.raises(DriverError, match="hexa_log"):
            await asyncio.wait_for(sub.fetch(10), 10)
        assert "hexa_log" in sub.status().error
        await receiver.start()
        await eventually(
            lambda: "hexa_log" in receiver.health()["reason"], within=20, what="unhealthy"
        )
        assert not receiver.health()["healthy"]
        async with driver.engine.begin() as db:
            await db.exec_driver_sql("ALTER TABLE hexa_log_away RENAME TO hexa_log")
        assert [d.record.body for d in await drain(sub, 1)] == [b"0"]
        assert sub.status().error == ""
        await eventually(lambda: receiver.health()["healthy"], within=20, what="healthy again")
    finally:
        await receiver.close()
        await sub.close()
        await conn.close()
