"""Lock mode, several relays: a claim made while a batch of the same relay settles (its
commit landed, the relay not told yet) still sees the rows another relay holds, and leaves
out the later rows of their keys (per-key order).

The race, made deterministic: relay B holds row 1 (key k1); relay A's batch of row 2 has
committed (deleted) but A has not yet forgotten it; A claims rows 3 (k1) and 4. Counting
"unsent rows up to 4" (1, 3, 4) against "A's rows" (3, 4 and, still, 2) found them equal,
took row 1 for one of A's own, and let row 3 out ahead of row 1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncConnection

from db_helpers import RecordingDriver
from hexa_event import Event
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import Outbox, OutboxRelay
from hexa_event.outbox.claims import Published

pytestmark = pytest.mark.postgres


def emit(url: str, keys: list[str]) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            Outbox(notify=False).emit_many(conn, [Event("orders", k, {}) for k in keys])
    finally:
        engine.dispose()


async def test_a_claim_during_a_settle_keeps_per_key_order(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    emit(pg_url, ["k1", "k2", "k1", "k3"])
    a = OutboxRelay(pg_url, RecordingDriver(), batch_size=1, claim_mode="lock")
    b = OutboxRelay(pg_url, RecordingDriver(), batch_size=1, claim_mode="lock")
    held = await b._claim()  # B holds row 1 (k1), publishing
    assert held is not None
    assert held.keys == ["k1"]
    settling = await a._claim()  # A takes row 2 (k2)
    assert settling is not None
    assert settling.keys == ["k2"]
    (first,) = held.ids

    landed, resume = asyncio.Event(), asyncio.Event()
    real_commit: Callable[[AsyncConnection], Any] = AsyncConnection.commit

    async def commit(conn: AsyncConnection) -> None:
        await real_commit(conn)
        if conn is settling.conn:  # committed; the relay hears of it only later
            landed.set()
            await resume.wait()

    monkeypatch.setattr(AsyncConnection, "commit", commit)
    finishing = asyncio.create_task(
        a._claims.finish(settling, Published(done=list(settling.ids)), None)
    )
    try:
        await asyncio.wait_for(landed.wait(), 20)
        a._claims.settings = dataclasses.replace(a._claims.settings, batch_size=10)
        claiming = asyncio.create_task(a._claim())
        await asyncio.wait({claiming}, timeout=1.0)  # a claim may wait for the settle
        resume.set()
        batch = await asyncio.wait_for(claiming, 20)
        assert await asyncio.wait_for(finishing, 20)
        assert batch is not None
        assert "k1" not in batch.keys, (batch.ids, first)  # row 3 waits for B's row 1
        assert batch.keys == ["k3"]
        await a._claims.forget(batch)
    finally:
        resume.set()
        await asyncio.gather(finishing, return_exceptions=True)
        await a._claims.forget(settling)
        await b._claims.forget(held)
        await a.close()
        await b.close()
