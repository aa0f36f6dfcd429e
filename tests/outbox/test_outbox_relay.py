"""Relay: at least once, marked sent only after publish, per-key order, several relays."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from db_helpers import RecordingDriver, event_id, rows
from hexa_event import Event
from hexa_event._sql.urls import async_url, sync_url
from hexa_event.driver import RawRecord
from hexa_event.outbox import Outbox, OutboxRelay
from hexa_event.outbox.claims import in_id_order
from hexa_event.outbox.store import decode_headers
from hexa_event.testing.waiting import eventually


def emit(url: str, keys: list[str], *, per_tx: int = 50) -> list[str]:
    """Emit one event per entry of ``keys`` (payload = its index); return ids in emit order."""
    outbox = Outbox()
    engine = create_engine(sync_url(url))
    ids: list[str] = []
    try:
        for start in range(0, len(keys), per_tx):
            with engine.begin() as conn:
                ids += outbox.emit_many(
                    conn,
                    [
                        Event(channel="orders", key=k, payload={"n": start + i})
                        for i, k in enumerate(keys[start : start + per_tx])
                    ],
                )
    finally:
        engine.dispose()
    return ids


LEASED = "SELECT count(*) FROM hexa_outbox WHERE lease_token IS NOT NULL AND sent_at IS NULL"


def unsent(url: str) -> int:
    return int(rows(url, "SELECT count(*) FROM hexa_outbox WHERE sent_at IS NULL")[0][0])


async def test_publishes_stored_record_unchanged_and_marks_sent(db_url: str) -> None:
    ids = emit(db_url, ["a", "b", "a"])
    stored = rows(db_url, "SELECT headers, body FROM hexa_outbox ORDER BY id")
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver, batch_size=10) as relay:
        assert await relay.run_once() == 3
        assert await relay.run_once() == 0
        stats = await relay.stats()
    assert driver.ids() == ids
    for record, (headers, body) in zip(driver.records, stored, strict=True):
        assert dict(record.headers) == decode_headers(bytes(headers))
        assert record.body == bytes(body)
    assert unsent(db_url) == 0
    assert (stats.backlog, stats.oldest_unsent_age, stats.published) == (0, None, 3)


async def test_rolled_back_transactions_send_nothing(db_url: str) -> None:
    outbox = Outbox()
    engine = create_engine(sync_url(db_url))
    with engine.connect() as conn:
        outbox.emit_many(conn, [Event("c", "k", payload=i) for i in range(5)])
        conn.rollback()
        kept = outbox.emit(conn, Event("c", "k", payload="kept"))
        conn.commit()
        outbox.emit(conn, Event("c", "k", payload="lost"))
        conn.rollback()
    engine.dispose()
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver) as relay:
        assert await relay.drain() == 1
    assert driver.ids() == [kept]


async def test_keep_sent_false_deletes_sent_rows(db_url: str) -> None:
    ids = emit(db_url, ["a", "b", "a"])
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver, keep_sent=False) as relay:
        assert await relay.run_once() == 3
    assert driver.ids() == ids
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]


async def test_failed_publish_leaves_rows_unsent_and_retries(db_url: str) -> None:
    ids = emit(db_url, ["a", "b"])
    driver = RecordingDriver()
    driver.fail_next = 1
    async with OutboxRelay(db_url, driver, retry_delay=0.0) as relay:
        assert await relay.run_once() == 0
        assert unsent(db_url) == 2
        assert rows(db_url, "SELECT max(attempts), count(last_error) FROM hexa_outbox") == [(1, 2)]
        stats = await relay.stats()
        assert stats.failed_batches == 1
        assert stats.backlog == 2
        assert stats.oldest_unsent_age is not None
        assert stats.oldest_unsent_age >= 0
        assert await relay.run_once() == 2
    assert driver.ids() == ids
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]  # sent rows leave
    assert rows(db_url, "SELECT row_count, event_ids FROM hexa_outbox_sent") == [(2, " ".join(ids))]


@pytest.mark.parametrize("mode", [None, "lease"])
async def test_per_key_order_with_concurrent_batches_and_failures(
    db_url: str, mode: str | None
) -> None:
    keys = [f"key-{i % 7}" for i in range(600)]
    ids = emit(db_url, keys)
    position = {eid: n for n, eid in enumerate(ids)}
    driver = RecordingDriver()
    driver.fail_next = 3
    relay = OutboxRelay(
        db_url, driver, batch_size=25, concurrency=4, retry_delay=0.05, claim_mode=mode
    )
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: len(set(driver.ids())) == len(ids), within=60, what="all rows")
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)
        await relay.close()
    seen: dict[str, list[int]] = defaultdict(list)
    for record in driver.records:
        seen[record.key].append(position[event_id(record)])
    for key, order in seen.items():
        assert order == sorted(order), f"key {key} published out of order"
    assert len(driver.records) == len(ids)  # failures raised before storing: no duplicates
    assert unsent(db_url) == 0


async def test_one_hot_key_is_never_in_flight_twice(db_url: str) -> None:
    """While a relay has a batch of key k in flight, no other relay claims later rows of k;
    the same relay claims them ahead but publishes them only after the first batch."""
    emit(db_url, ["hot"] * 10)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()
    async with OutboxRelay(db_url, driver, batch_size=4, claim_mode="lease") as relay:
        first = asyncio.create_task(relay.run_once())
        await eventually(lambda: driver.in_publish == 1, what="first batch in flight")
        async with OutboxRelay(db_url, RecordingDriver(), claim_mode="lease") as other:
            assert await other.run_once() == 0  # rows 5..10 wait for rows 1..4
        second = asyncio.create_task(relay.run_once())  # claims 5..8 ahead
        await eventually(lambda: rows(db_url, LEASED)[0][0] == 8, what="claimed ahead")
        assert driver.in_publish == 1  # ...but does not publish them yet
        driver.gate.set()
        assert await first == 4
        assert await second == 4
        assert await relay.drain() == 2
    assert [r.body for r in driver.records] == [b'{"n":%d}' % i for i in range(10)]


async def test_a_failed_batch_stops_the_batches_claimed_after_it(db_url: str) -> None:
    emit(db_url, ["hot"] * 6)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()
    driver.fail_next = 1
    relay = OutboxRelay(db_url, driver, batch_size=3, retry_delay=0.0, claim_mode="lease")
    async with relay:
        first = asyncio.create_task(relay.run_once())
        await eventually(lambda: driver.in_publish == 1, what="first batch in flight")
        second = asyncio.create_task(relay.run_once())
        await eventually(lambda: rows(db_url, LEASED)[0][0] == 6, what="claimed ahead")
        driver.gate.set()
        assert (await first, await second) == (0, 0)
        assert driver.calls == 1  # the second batch was never handed to the driver
        assert await relay.drain() == 6
    assert [r.body for r in driver.records] == [b'{"n":%d}' % i for i in range(6)]


@pytest.mark.parametrize("mode", [None, "lease"])
async def test_several_relays_share_the_work(db_url: str, mode: str | None) -> None:
    keys = [f"k{i % 13}" for i in range(1500)]
    ids = emit(db_url, keys, per_tx=100)
    position = {eid: n for n, eid in enumerate(ids)}
    driver = RecordingDriver()  # one broker, three relays
    relays = [
        OutboxRelay(
            db_url, driver, batch_size=20, concurrency=3, poll_interval=0.05, claim_mode=mode
        )
        for _ in range(3)
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await eventually(lambda: len(driver.records) >= len(ids), within=90, what="all rows")
    finally:
        for r in relays:
            r.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    published = [(await r.stats()).published for r in relays]
    for r in relays:
        await r.close()
    assert sorted(driver.ids()) == sorted(ids)  # each exactly once: leases held
    seen: dict[str, list[int]] = defaultdict(list)
    for record in driver.records:
        seen[record.key].append(position[event_id(record)])
    assert all(order == sorted(order) for order in seen.values())
    assert sum(published) == len(ids)


async def test_expired_lease_is_taken_over(db_url: str) -> None:
    """A relay that claimed rows and vanished: once the lease expires, another sends them."""
    ids = emit(db_url, ["a", "b"])
    stuck = RecordingDriver()
    stuck.gate = asyncio.Event()
    # The lease outlasts the second relay's start (a new engine, its first claim) on a
    # loaded machine: at 0.3 s it once expired before that claim and the rows were free.
    dead = OutboxRelay(db_url, stuck, lease=1.0)
    hung = asyncio.create_task(dead.run_once())
    await eventually(lambda: stuck.in_publish == 1, what="claim")
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver) as relay:
        assert await relay.run_once() == 0  # still leased
        deadline = asyncio.get_running_loop().time() + 10
        while await relay.run_once() == 0:
            assert asyncio.get_running_loop().time() < deadline, "lease never expired"
            await asyncio.sleep(0.05)
    hung.cancel()
    await dead.close()
    assert driver.ids() == ids


@pytest.mark.postgres
async def test_lock_mode_hot_key_waits_for_the_batch_in_flight(pg_url: str) -> None:
    """Lock mode: rows of a key whose earlier rows another relay holds are left out."""
    emit(pg_url, ["hot"] * 6 + ["cold"] * 2)
    driver = RecordingDriver()
    driver.gate = asyncio.Event()
    async with OutboxRelay(pg_url, driver, batch_size=3) as relay:
        assert relay.claim_mode == "lock"
        first = asyncio.create_task(relay.run_once())
        await eventually(lambda: driver.in_publish == 1, what="first batch in flight")
        other_driver = RecordingDriver()
        async with OutboxRelay(pg_url, other_driver) as other:
            assert await other.run_once() == 2  # only the cold key is free
        assert [r.key for r in other_driver.records] == ["cold", "cold"]
        second = asyncio.create_task(relay.run_once())  # the same relay claims ahead...
        await eventually(lambda: relay.in_flight == 6, what="claimed ahead")
        assert driver.in_publish == 1  # ...but publishes only after its first batch
        driver.gate.set()
        assert await first == 3
        assert await second == 3
    assert [r.body for r in driver.records] == [b'{"n":%d}' % i for i in range(6)]


@pytest.mark.postgres
async def test_lock_mode_next_batch_publishes_while_the_previous_is_marked(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock mode: once a batch is acknowledged, the next one of the same key publishes
    without waiting for the first one's mark to commit (its rows stay locked meanwhile)."""
    emit(pg_url, ["hot", "hot"])
    driver = RecordingDriver()
    held = asyncio.Event()
    release = asyncio.Event()
    execute = AsyncConnection.execute

    async def slow_mark(self: AsyncConnection, statement: Any, *args: Any, **kw: Any) -> Any:
        if "INSERT INTO hexa_outbox_sent" in str(statement) and not release.is_set():
            held.set()
            await release.wait()
        return await execute(self, statement, *args, **kw)

    monkeypatch.setattr(AsyncConnection, "execute", slow_mark)
    async with OutboxRelay(pg_url, driver, batch_size=1) as relay:
        assert relay.claim_mode == "lock"
        first = asyncio.create_task(relay.run_once())
        await asyncio.wait_for(held.wait(), 30)  # published; its mark waits
        second = asyncio.create_task(relay.run_once())
        await eventually(lambda: len(driver.records) == 2, what="second batch published")
        release.set()
        assert (await first, await second) == (1, 1)
    assert [r.body for r in driver.records] == [b'{"n":0}', b'{"n":1}']
    assert unsent(pg_url) == 0


@pytest.mark.postgres
async def test_lock_mode_a_failed_batch_holds_its_keys_before_the_next_claim(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock mode: a batch that failed to publish puts its rows on hold before a later claim
    may run without waiting for it: a claim made while the hold was not committed yet took
    the failed (still locked) rows for this relay's own batch in flight and published the
    key's next row first."""
    ids = emit(pg_url, ["k", "k"])
    driver = RecordingDriver()
    driver.fail_next = 1
    held = asyncio.Event()
    release = asyncio.Event()
    execute = AsyncConnection.execute

    async def slow_hold(self: AsyncConnection, statement: Any, *args: Any, **kw: Any) -> Any:
        if str(statement).startswith("UPDATE hexa_outbox SET lease_until") and not release.is_set():
            held.set()
            await release.wait()
        return await execute(self, statement, *args, **kw)

    monkeypatch.setattr(AsyncConnection, "execute", slow_hold)
    async with OutboxRelay(pg_url, driver, batch_size=1, retry_delay=0.0) as relay:
        first = asyncio.create_task(relay.run_once())
        await asyncio.wait_for(held.wait(), 30)  # failed; its hold is being written
        second = asyncio.create_task(relay.run_once())  # claims the key's second row
        await eventually(lambda: relay.in_flight == 2, what="the second row claimed")
        assert driver.ids() == []  # not published ahead of the first, which waits to retry
        release.set()
        assert (await first, await second) == (0, 0)  # the second waited, and was put back
        assert driver.ids() == []
        assert await relay.drain(max_seconds=30) == 2
    assert driver.ids() == ids


@pytest.mark.postgres
async def test_late_commit_is_not_skipped(pg_url: str) -> None:
    """T1 inserts first but commits last; the relay has sent T2's row meanwhile."""
    outbox = Outbox()
    engine = create_async_engine(async_url(pg_url))
    driver = RecordingDriver()
    try:
        async with engine.connect() as t1, engine.connect() as t2:
            late = await outbox.emit_async(t1, Event(channel="c", key="a", payload=1))
            early = await outbox.emit_async(t2, Event(channel="c", key="b", payload=2))
            await t2.commit()
            ids_in_table = rows(pg_url, "SELECT id FROM hexa_outbox")
            assert len(ids_in_table) == 1  # T1's row (the lower id) is not visible yet
            async with OutboxRelay(pg_url, driver) as relay:
                assert await relay.run_once() == 1
                assert driver.ids() == [early]
                await t1.commit()
                assert await relay.run_once() == 1
        assert driver.ids() == [early, late]
        # the late row has the lower id, and was sent after the higher one
        logged = rows(pg_url, "SELECT event_ids FROM hexa_outbox_sent ORDER BY first_id")
        assert [r[0] for r in logged] == [late, early]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_notify_wakes_the_relay(pg_url: str) -> None:
    driver = RecordingDriver()
    relay = OutboxRelay(pg_url, driver, poll_interval=60.0)  # polling alone would be too late
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.listening.wait(), 20)
        # The relay has looked and found nothing; now it idles for poll_interval.
        await eventually(lambda: relay._wake.is_set() is False, what="idle", within=20)
        engine = create_async_engine(async_url(pg_url))
        async with engine.begin() as conn:
            sent = await Outbox(notify=True).emit_async(conn, Event("c", "k", payload=1))
        await engine.dispose()
        await asyncio.wait_for(driver.changed.wait(), 10)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
        await relay.close()
    assert driver.ids() == [sent]


async def test_an_outbox_without_a_sent_log_is_marked_in_place_until_migrated(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrading: an outbox made before the sent log keeps working (rows marked in place,
    a warning names the command); ``migrate`` adds the log, which later relays use; the
    status and the cleaner count both kinds of sent record."""
    from datetime import timedelta

    from hexa_event.commands.status import measure
    from hexa_event.outbox import OutboxCleaner, migrate

    engine = create_engine(sync_url(db_url))
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE hexa_outbox_sent")
    engine.dispose()
    old = emit(db_url, ["a", "b", "a"])
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver) as relay:
        assert await relay.run_once() == 3
    assert "run `hexa-event outbox migrate`" in caplog.text
    assert rows(db_url, "SELECT count(*), count(sent_at) FROM hexa_outbox") == [(3, 3)]
    status = await measure(db_url, 1000.0)
    assert (status["backlog"], status["sent_per_second"]) == (0, 0.003)

    migrate(db_url)  # adds the log, keeps the rows marked in place
    new = emit(db_url, ["a", "c"])
    async with OutboxRelay(db_url, driver) as relay:
        assert await relay.run_once() == 2
    assert driver.ids() == old + new
    assert rows(db_url, "SELECT count(*), count(sent_at) FROM hexa_outbox") == [(3, 3)]
    assert rows(db_url, "SELECT row_count, event_ids FROM hexa_outbox_sent") == [(2, " ".join(new))]
    status = await measure(db_url, 1000.0)
    assert status["sent_per_second"] == 0.005
    async with OutboxCleaner(db_url, retention=timedelta(0)) as cleaner:
        assert await cleaner.run_once() == 5
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox_sent") == [(0,)]


async def test_a_hand_built_table_without_its_sent_log_is_marked_in_place(db_url: str) -> None:
    """A ``Table`` not made by ``table_for`` has no sent log in its metadata: the relay
    marks its rows in place and the cleaner deletes them, as before the sent log."""
    from datetime import timedelta

    from sqlalchemy import MetaData

    from hexa_event.outbox import OutboxCleaner, outbox_table

    table = outbox_table.to_metadata(MetaData())
    ids = emit(db_url, ["a", "b"])
    driver = RecordingDriver()
    async with OutboxRelay(db_url, driver, table=table) as relay:
        assert await relay.run_once() == 2
    assert driver.ids() == ids
    assert rows(db_url, "SELECT count(*), count(sent_at) FROM hexa_outbox") == [(2, 2)]
    async with OutboxCleaner(db_url, retention=timedelta(0), table=table) as cleaner:
        assert await cleaner.run_once() == 2


class CallsDriver(RecordingDriver):
    """Keeps the records of each ``publish`` call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[RawRecord]] = []

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.batches.append(list(records))
        await super().publish(records)


async def test_a_batch_is_split_by_key_into_concurrent_publishes(db_url: str) -> None:
    keys = [f"key-{i % 8}" for i in range(40)]
    ids = emit(db_url, keys)
    driver = CallsDriver()
    async with OutboxRelay(db_url, driver, batch_size=40, concurrency=4) as relay:
        assert await relay.run_once() == 40
    assert 1 <= len(driver.batches) <= 4
    owner: dict[str, int] = {}
    position = {eid: n for n, eid in enumerate(ids)}
    for n, batch in enumerate(driver.batches):
        for record in batch:
            assert owner.setdefault(record.key, n) == n, "a key in two publishes"
        order = [position[event_id(r)] for r in batch]
        assert order == sorted(order)
    assert sorted(driver.ids()) == sorted(ids)


def test_claimed_columns_are_put_in_id_order() -> None:
    columns = (
        [3, 1, 2],
        ["c3", "c1", "c2"],
        ["k3", "k1", "k2"],
        [b"h3", b"h1", b"h2"],
        [b"3", b"1", b"2"],
    )
    assert in_id_order(columns) == (
        [1, 2, 3],
        ["c1", "c2", "c3"],
        ["k1", "k2", "k3"],
        [b"h1", b"h2", b"h3"],
        [b"1", b"2", b"3"],
    )
    ordered = ([1, 5], ["a", "b"], ["k", "k"], [b"", b""], [b"x", b"y"])
    assert in_id_order(ordered) is ordered
