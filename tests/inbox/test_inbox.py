"""Inbox: effects and dedup record in one transaction; duplicates acked without effects."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from db_helpers import rows
from hexa_event import Context, Event, Message, connect
from hexa_event._sql.clock import utcnow
from hexa_event._sql.urls import async_url
from hexa_event.errors import ConfigurationError
from hexa_event.inbox import Inbox, InboxCleaner, current_session, dedup_key, inbox_table
from hexa_event.outbox import Outbox, outbox_table
from hexa_event.testing.waiting import Collector

effects_md = MetaData()
effects = Table(
    "test_effects",
    effects_md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64)),
    Column("action", String(64)),
)


async def prepared(url: str) -> Any:
    engine = create_async_engine(async_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(effects_md.create_all)
        await conn.execute(effects.delete())
    return engine


def ctx_for(event_id: str, action: str = "billing.charge", **more: str) -> Context:
    return Context(event_id=event_id, handler_action=action, **more)


def msg(event_id: str) -> Message[Any]:
    return Message(
        id=event_id, channel="c", key="k", payload={}, headers={}, attempt=1, timestamp=None
    )


def test_dedup_key_prefers_root_ids() -> None:
    assert dedup_key(ctx_for("e2", "a.retry", root_event_id="e1", root_handler_action="a")) == (
        "e1",
        "a",
    )
    assert dedup_key(ctx_for("e2")) == ("e2", "billing.charge")
    with pytest.raises(ConfigurationError, match="receiver"):
        dedup_key(Context())


async def test_duplicate_runs_effects_once(db_url: str) -> None:
    engine = await prepared(db_url)
    inbox = Inbox(engine)
    calls = 0

    @inbox.idempotent
    async def handler(ctx: Context, m: Message[Any], session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        await session.execute(insert(effects).values(event_id=m.id, action=ctx.handler_action))

    for _ in range(3):
        await handler(ctx_for("e1"), msg("e1"))
    await handler(ctx_for("e1", "shipping.reserve"), msg("e1"))  # another action: runs
    assert calls == 2
    assert rows(db_url, "SELECT count(*) FROM test_effects") == [(2,)]
    assert await inbox.seen(ctx_for("e1"))
    assert not await inbox.seen(ctx_for("e2"))
    await engine.dispose()


async def test_failure_rolls_back_effects_and_record(db_url: str) -> None:
    engine = await prepared(db_url)
    inbox = Inbox(engine)
    fail = True

    @inbox.idempotent
    async def handler(ctx: Context, m: Message[Any], session: AsyncSession) -> None:
        await session.execute(insert(effects).values(event_id=m.id, action="x"))
        if fail:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await handler(ctx_for("e1"), msg("e1"))
    assert rows(db_url, "SELECT count(*) FROM test_effects") == [(0,)]
    assert not await inbox.seen(ctx_for("e1"))
    fail = False
    await handler(ctx_for("e1"), msg("e1"))
    assert rows(db_url, "SELECT count(*) FROM test_effects") == [(1,)]
    await engine.dispose()


async def test_middleware_and_outbox_in_one_transaction(db_url: str) -> None:
    """consume -> write -> emit: effect, inbox row and outbox row commit together."""
    engine = await prepared(db_url)
    inbox = Inbox(engine)
    outbox = Outbox()

    async def handler(ctx: Context, m: Message[Any]) -> None:
        session = current_session()
        await session.execute(insert(effects).values(event_id=m.id, action="x"))
        await outbox.emit_async(session, Event("charged", m.key, payload={"of": m.id}), ctx)

    wrapped = inbox.middleware()(handler)
    await wrapped(ctx_for("e1"), msg("e1"))
    await wrapped(ctx_for("e1"), msg("e1"))
    assert rows(db_url, "SELECT count(*) FROM test_effects") == [(1,)]
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(1,)]
    with pytest.raises(RuntimeError, match="no inbox transaction"):
        current_session()
    await engine.dispose()


@pytest.mark.postgres
async def test_concurrent_duplicates_run_effects_once(pg_url: str) -> None:
    """Two deliveries of one event at once: the second waits on the first's row, then skips."""
    engine = await prepared(pg_url)
    inbox = Inbox(engine)
    inside = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    @inbox.idempotent
    async def handler(ctx: Context, m: Message[Any], session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        inside.set()
        await release.wait()
        await session.execute(insert(effects).values(event_id=m.id, action="x"))

    first = asyncio.create_task(handler(ctx_for("e1"), msg("e1")))
    await asyncio.wait_for(inside.wait(), 10)
    second = asyncio.create_task(handler(ctx_for("e1"), msg("e1")))
    done, _ = await asyncio.wait({second}, timeout=0.3)
    assert not done  # blocked on the first transaction's uncommitted dedup row
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert calls == 1
    assert rows(pg_url, "SELECT count(*) FROM test_effects") == [(1,)]
    await engine.dispose()


async def test_receiver_redelivery_is_acked_without_effects(db_url: str) -> None:
    """Through the real pipeline (memory driver): the same event id emitted twice."""
    engine = await prepared(db_url)
    inbox = Inbox(engine)
    driver = connect(f"memory://inbox-{uuid.uuid4().hex}")
    receiver = driver.receiver("svc")
    handled = Collector()

    async def effects_of(ctx: Context, m: Message[Any], session: AsyncSession) -> None:
        await session.execute(insert(effects).values(event_id=m.id, action=ctx.handler_action))

    once = inbox.idempotent(effects_of)

    @receiver.subscribe("orders", action="billing.charge")
    async def charge(ctx: Context, m: Message[Any]) -> None:
        await once(ctx, m)
        handled.add(m.id)  # reached for duplicates too: they are acked

    async with receiver:
        emitter = driver.emitter()
        event = Event("orders", "o-1", payload={"total": 1}, id="evt-1")
        await emitter.emit(event)
        await emitter.emit(event)  # a producer retry / relay re-send
        await emitter.emit(Event("orders", "o-2", payload={}, id="evt-2"))
        assert sorted(await handled.wait_for(3)) == ["evt-1", "evt-1", "evt-2"]
    await driver.close()
    assert sorted(rows(db_url, "SELECT event_id FROM test_effects")) == [("evt-1",), ("evt-2",)]
    await engine.dispose()


async def test_cleaner_deletes_expired_records(db_url: str) -> None:
    engine = await prepared(db_url)
    inbox = Inbox(engine)
    for i in range(7):
        await inbox.run(ctx_for(f"e{i}"), lambda s: asyncio.sleep(0))
    async with engine.begin() as conn:
        await conn.execute(
            update(inbox_table)
            .where(inbox_table.c.event_id.in_(["e0", "e1", "e2", "e3", "e4"]))
            .values(processed_at=utcnow() - timedelta(days=30))
        )
    async with InboxCleaner(engine, retention=timedelta(days=7), batch_size=2) as cleaner:
        assert await cleaner.run_once() == 5
    async with engine.connect() as conn:
        left = (await conn.execute(select(inbox_table.c.event_id))).scalars().all()
    assert sorted(left) == ["e5", "e6"]
    assert outbox_table.name == "hexa_outbox"
    await engine.dispose()


async def test_consume_write_emit_exactly_once_effects(db_url: str) -> None:
    """orders -> (effect + outbox row + inbox row in one tx) -> relay -> charges.

    The order event is delivered three times; one effect, one charge event reaches the
    broker, and its re-send by the relay is deduplicated downstream too.
    """
    from hexa_event.outbox import OutboxRelay

    engine = await prepared(db_url)
    inbox = Inbox(engine)
    outbox = Outbox()
    # The relay needs a persistent target: the SQL log in the same database.
    driver = connect(db_url)
    orders, charges_channel = f"orders-{uuid.uuid4().hex[:8]}", f"charges-{uuid.uuid4().hex[:8]}"
    receiver = driver.receiver("billing")
    handled = Collector()
    charges = Collector()

    async def charge_effects(ctx: Context, m: Message[Any], session: AsyncSession) -> None:
        await session.execute(insert(effects).values(event_id=m.id, action=ctx.handler_action))
        await outbox.emit_async(
            session, Event(charges_channel, m.key, payload={"order": m.id}), ctx
        )

    charge_once = inbox.idempotent(charge_effects)

    @receiver.subscribe(orders, action="billing.charge")
    async def charge(ctx: Context, m: Message[Any]) -> None:
        await charge_once(ctx, m)
        handled.add(m.id)

    async def record(ctx: Context, m: Message[Any], session: AsyncSession) -> None:
        charges.add(m.payload["order"])

    receiver.subscribe(charges_channel, action="ledger.record")(inbox.idempotent(record))

    async with receiver:
        emitter = driver.emitter()
        order = Event(orders, "o-1", payload={"total": 5}, id="order-1")
        for _ in range(3):
            await emitter.emit(order)
        await handled.wait_for(3)
        # the row as the relay will send it (sent rows leave the table)
        unsent = rows(db_url, "SELECT headers, body, key, channel FROM hexa_outbox")
        assert len(unsent) == 1
        async with OutboxRelay(engine, driver, poll_interval=0.05) as relay:
            assert await relay.drain() == 1
        # the relay re-sends the charge (as after a crash before mark-sent): same event id
        from hexa_event.driver import RawRecord
        from hexa_event.outbox.store import decode_headers

        headers, body, key, channel = unsent[0]
        await driver.publish([RawRecord(channel, key, decode_headers(bytes(headers)), bytes(body))])
        await charges.wait_for(1)
        deadline = asyncio.get_running_loop().time() + 10
        while (
            rows(db_url, "SELECT count(*) FROM hexa_inbox WHERE action = 'ledger.record'")[0][0] < 1
        ):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    await driver.close()
    assert rows(db_url, "SELECT count(*) FROM test_effects") == [(1,)]
    assert rows(db_url, "SELECT count(*) FROM hexa_outbox") == [(0,)]
    assert rows(db_url, "SELECT sum(row_count) FROM hexa_outbox_sent") == [(1,)]
    assert charges.items == ["order-1"]
    await engine.dispose()
