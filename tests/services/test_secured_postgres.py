"""PostgreSQL with password authentication (``postgres-auth``: SCRAM-SHA-256 over TCP) for
the SQL driver, the outbox and the inbox.

With the right password each works; with a wrong one each fails at its first use with an
error that says so, within a bound (never a hang), and neither password appears in the
error, the logs or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import hexa_event
from hexa_event import inbox, outbox
from hexa_event.context import Context
from hexa_event.event import Event, Message
from hexa_event_services import Service

pytestmark = [pytest.mark.postgres_auth, pytest.mark.timeout(180)]

sqlalchemy = pytest.importorskip("sqlalchemy")

WRONG_PASSWORD = "Wr0ng-Pg-Pa55-" + uuid.uuid4().hex[:6]
FAIL_WITHIN = 30.0


def _good(pg: Service) -> str:
    return pg.url_with_password()  # type: ignore[attr-defined,no-any-return]


def _bad(pg: Service) -> str:
    return pg.url_with_password(WRONG_PASSWORD)  # type: ignore[attr-defined,no-any-return]


def _right_password(pg: Service) -> str:
    from hexa_event_services.definitions.postgres_auth import PG_USERS

    return PG_USERS[pg.user]  # type: ignore[attr-defined]


async def _fails_clearly(
    pg: Service, attempt: Callable[[], Awaitable[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """``attempt`` raises within FAIL_WITHIN, names the password problem, leaks nothing."""
    caplog.set_level(logging.DEBUG)
    began = time.monotonic()
    with pytest.raises(Exception) as failure:  # noqa: PT011 - any error type, checked below
        await asyncio.wait_for(attempt(), FAIL_WITHIN)
    took = time.monotonic() - began
    assert not isinstance(failure.value, TimeoutError), f"hung for {took:.0f}s"
    message = str(failure.value)
    assert "password authentication failed" in message, message
    for secret in (WRONG_PASSWORD, _right_password(pg)):
        assert secret not in message
        assert secret not in repr(failure.value)
        assert secret not in caplog.text


async def test_sql_driver_with_password(postgres_auth: Service) -> None:
    conn = hexa_event.connect(_good(postgres_auth))
    tag = uuid.uuid4().hex[:8]
    channel, action = f"pgauth-{tag}", f"pgauth-act-{tag}"
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    receiver = conn.receiver("pgauth")

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        if not got.done():
            got.set_result(msg.payload["hello"])

    try:
        async with receiver:
            await conn.emitter().emit(Event(channel, "k", {"hello": tag}))
            assert await asyncio.wait_for(got, 60) == tag
    finally:
        await conn.close()
    assert _right_password(postgres_auth) not in repr(conn)


async def test_sql_driver_wrong_password(
    postgres_auth: Service, caplog: pytest.LogCaptureFixture
) -> None:
    conn = hexa_event.connect(_bad(postgres_auth))
    try:
        await _fails_clearly(
            postgres_auth,
            lambda: conn.emitter().emit(Event(f"pgauth-{uuid.uuid4().hex[:8]}", "k", {})),
            caplog,
        )
        assert WRONG_PASSWORD not in repr(conn)
    finally:
        await conn.close()


async def test_outbox_with_password(postgres_auth: Service, tmp_path: Path) -> None:
    url = _good(postgres_auth)
    await asyncio.to_thread(outbox.migrate, url)
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    channel = f"pgauth-outbox-{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as db:
            outbox.Outbox().emit(db, Event(channel, "k", {"n": 1}))
    finally:
        engine.dispose()
    target = hexa_event.connect(f"sqlite:///{tmp_path / 'log.db'}")  # a persistent target
    relay = outbox.OutboxRelay(url, target, listen=False)
    try:
        assert await asyncio.wait_for(relay.drain(max_seconds=30), 60) >= 1
    finally:
        await relay.close()
        await target.close()


async def test_outbox_wrong_password(
    postgres_auth: Service, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    url = _bad(postgres_auth)
    await _fails_clearly(postgres_auth, lambda: asyncio.to_thread(outbox.migrate, url), caplog)
    target = hexa_event.connect(f"sqlite:///{tmp_path / 'log.db'}")  # a persistent target
    relay = outbox.OutboxRelay(url, target, listen=False)
    try:
        await _fails_clearly(postgres_auth, relay.run_once, caplog)
        assert WRONG_PASSWORD not in repr(relay)
    finally:
        await relay.close()
        await target.close()


async def test_inbox_with_password(postgres_auth: Service) -> None:
    url = _good(postgres_auth)
    await asyncio.to_thread(inbox.migrate, url)
    box = inbox.Inbox(url)
    ctx = Context(event_id=uuid.uuid4().hex, handler_action="pgauth-inbox")
    runs = 0

    async def effects(session: Any) -> int:
        nonlocal runs
        runs += 1
        return runs

    try:
        assert await box.run(ctx, effects) == (True, 1)
        assert await box.run(ctx, effects) == (False, None)  # a redelivery: no effects
    finally:
        await box.close()
    assert runs == 1


async def test_inbox_wrong_password(
    postgres_auth: Service, caplog: pytest.LogCaptureFixture
) -> None:
    url = _bad(postgres_auth)
    await _fails_clearly(postgres_auth, lambda: asyncio.to_thread(inbox.migrate, url), caplog)
    box = inbox.Inbox(url)
    ctx = Context(event_id=uuid.uuid4().hex, handler_action="pgauth-inbox")

    async def effects(session: Any) -> None:
        raise AssertionError("effects ran without a database")

    try:
        await _fails_clearly(postgres_auth, lambda: box.run(ctx, effects), caplog)
        assert WRONG_PASSWORD not in repr(box)
    finally:
        await box.close()
