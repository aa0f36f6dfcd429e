"""A handler raising a ``BaseException`` (not an ``Exception``: a client library's own
control flow, ``KeyboardInterrupt``, a cancellation) under the inbox: its effects and the
dedup record roll back together, the exception goes on to the caller, no connection stays
checked out, and the redelivery runs the handler again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from hexa_event import Context, Message
from hexa_event._sql.urls import async_url
from hexa_event.inbox import Inbox, current_session

md = MetaData()
effects = Table(
    "inbox_base_exception_effects",
    md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64)),
)


class Fatal(BaseException):
    """Not an Exception."""


def delivery(event_id: str) -> tuple[Context, Message[Any]]:
    ctx = Context(event_id=event_id, handler_action="billing.charge")
    message: Message[Any] = Message(
        id=event_id, channel="c", key="k", payload={}, headers={}, attempt=1, timestamp=None
    )
    return ctx, message


@pytest.mark.parametrize("raised", [Fatal("gave up"), asyncio.CancelledError()])
@pytest.mark.parametrize("style", ["idempotent", "middleware"])
async def test_a_base_exception_rolls_back_effects_and_dedup_record(
    db_url: str, raised: BaseException, style: str
) -> None:
    engine = create_async_engine(async_url(db_url))
    async with engine.begin() as conn:
        await conn.run_sync(md.create_all)
        await conn.execute(effects.delete())
    inbox = Inbox(engine)
    fail = [True]

    async def effect(ctx: Context, session: AsyncSession) -> None:
        await session.execute(insert(effects).values(event_id=ctx.event_id))
        if fail[0]:
            raise raised

    if style == "idempotent":

        async def charge(ctx: Context, msg: Message[Any], session: AsyncSession) -> None:
            await effect(ctx, session)

        handler = inbox.idempotent(charge)
    else:

        async def plain(ctx: Context, msg: Message[Any]) -> None:
            await effect(ctx, current_session())

        handler = inbox.middleware()(plain)
    try:
        with pytest.raises(type(raised)):
            await asyncio.create_task(handler(*delivery("e1")))
        assert engine.pool.checkedout() == 0
        assert not await inbox.seen(delivery("e1")[0])
        async with engine.connect() as conn:
            assert (await conn.execute(select(effects.c.event_id))).all() == []
        fail[0] = False
        await handler(*delivery("e1"))  # the redelivery
        await handler(*delivery("e1"))  # a duplicate of it: skipped
        assert await inbox.seen(delivery("e1")[0])
        async with engine.connect() as conn:
            assert (await conn.execute(select(effects.c.event_id))).all() == [("e1",)]
        with pytest.raises(RuntimeError, match="no inbox transaction"):
            current_session()
    finally:
        await inbox.close()
        await engine.dispose()
