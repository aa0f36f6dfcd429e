"""Issue 20 #6: the mistakes a new user makes get an error that names the fix."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

import hexa_event as he
from hexa_event.outbox import Outbox, OutboxRelay
from hexa_event.testing import call_handler


def test_outbox_emit_before_migrate_says_to_migrate(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with Session(engine) as session, pytest.raises(he.ConfigurationError) as caught:
        Outbox().emit(session, he.Event("orders", "k", {"n": 1}))
    engine.dispose()
    assert "hexa_outbox" in str(caught.value)
    assert "migrate" in str(caught.value)
    assert "hexa-event outbox migrate --db URL" in str(caught.value)


async def test_outbox_emit_async_before_migrate_says_to_migrate(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    outbox = Outbox(table_prefix="billing_")
    try:
        async with engine.begin() as conn:
            with pytest.raises(he.ConfigurationError, match="--table-prefix billing_"):
                await outbox.emit_async(conn, he.Event("orders", "k", {"n": 1}))
    finally:
        await engine.dispose()


async def test_relay_with_a_sync_engine_asks_for_an_async_engine_or_url(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    target = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    try:
        with pytest.raises(he.ConfigurationError, match="AsyncEngine") as caught:
            OutboxRelay(engine, target)  # type: ignore[arg-type]
        assert "database URL" in str(caught.value)
    finally:
        engine.dispose()
        await target.close()


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite://data/app.db", "sqlite:///data/app.db"),
        ("sqlite://app.db", "sqlite:///app.db"),
    ],
)
def test_two_slash_sqlite_url_fails_at_connect_with_the_three_slash_form(
    url: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(he.ConfigurationError, match="three slashes") as caught:
        he.connect(url)
    assert hint in str(caught.value)
    assert not list(tmp_path.iterdir())


async def test_timeout_failures_name_the_limit() -> None:
    receiver = he.connect("memory://").receiver("svc", middlewares=[he.timeout(0.05)])

    @receiver.subscribe("orders", action="a")
    async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match=r"he\.timeout\(0\.05\)"):
        await call_handler(receiver, {}, action="a")


async def test_a_handlers_own_timeout_error_is_left_alone() -> None:
    receiver = he.connect("memory://").receiver("svc", middlewares=[he.timeout(30)])

    @receiver.subscribe("orders", action="a")
    async def fails(ctx: he.Context, msg: he.Message[Any]) -> None:
        raise TimeoutError("the payment gateway timed out")

    with pytest.raises(TimeoutError, match="payment gateway"):
        await call_handler(receiver, {}, action="a")


async def test_emit_of_a_dict_names_event() -> None:
    conn = he.connect("memory://")
    with pytest.raises(he.InvalidArgumentError, match=r"he\.Event\(channel=") as caught:
        await conn.emitter().emit({"channel": "orders", "key": "k"})  # type: ignore[arg-type]
    assert isinstance(caught.value, TypeError)
    await conn.close()


async def test_a_dict_as_context_names_context() -> None:
    conn = he.connect("memory://")
    with pytest.raises(he.InvalidArgumentError, match=r"he\.Context\("):
        await conn.emitter().emit(
            he.Event("orders", "k", {}),
            {"correlation_id": "x"},  # type: ignore[arg-type]
        )
    await conn.close()


async def test_a_dict_as_the_batch_context_names_context() -> None:
    conn = he.connect("memory://")
    with pytest.raises(he.InvalidArgumentError, match=r"he\.Context\("):
        await conn.emitter().emit_many(
            [he.Event("orders", "k", {})],
            {"correlation_id": "x"},  # type: ignore[arg-type]
        )
    await conn.close()
