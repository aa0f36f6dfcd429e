"""Event ids the inbox's columns cannot hold as they are (a foreign producer's: longer than
255 characters, or with a NUL) still dedup: stored hashed where the database enforces the
columns, whole on SQLite as before."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from hexa_event import Context, Message
from hexa_event._sql.urls import async_url
from hexa_event.inbox import Inbox


def delivery(event_id: str, action: str) -> tuple[Context, Message[Any]]:
    ctx = Context(event_id=event_id, handler_action=action)
    message: Message[Any] = Message(
        id=event_id, channel="c", key="k", payload={}, headers={}, attempt=1, timestamp=None
    )
    return ctx, message


async def test_odd_event_ids_are_handled_once_each(db_url: str) -> None:
    engine = create_async_engine(async_url(db_url))
    inbox = Inbox(engine)
    calls: list[str] = []

    @inbox.idempotent
    async def handler(ctx: Context, msg: Message[Any], session: AsyncSession) -> None:
        calls.append(ctx.event_id)

    long_id = "e" * 400
    near = "e" * 399 + "f"  # differs only past the 255th character
    with_nul = "e1\x00tail"
    long_action = "billing." + "a" * 300
    try:
        for event_id in (long_id, long_id, near, near, with_nul, with_nul):
            await handler(*delivery(event_id, long_action))
        assert calls == [long_id, near, with_nul]
        assert await inbox.seen(delivery(long_id, long_action)[0])
        assert not await inbox.seen(delivery("e" * 398, long_action)[0])
    finally:
        await engine.dispose()
