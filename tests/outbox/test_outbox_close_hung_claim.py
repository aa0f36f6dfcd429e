"""``close()`` while :meth:`run` is stuck in a claim that never returns (the database does
not answer: here the claim waits for the advisory lock another session holds): after the
lease, close cancels the claim, :meth:`run` returns, and health and the log say so. The
claim outlived ``close()`` (whose engine was then disposed under it) and ``run()`` never
returned."""

from __future__ import annotations

import asyncio
import logging
import zlib

import pytest
from sqlalchemy import create_engine, text

from db_helpers import RecordingDriver
from hexa_event._sql.urls import sync_url
from hexa_event.outbox import OutboxRelay, outbox_table
from hexa_event.testing import eventually

pytestmark = pytest.mark.postgres


async def test_close_cancels_a_claim_that_never_returns(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = zlib.crc32(f"hexa-outbox:{outbox_table.fullname}".encode()) & 0x7FFFFFFF
    holder = create_engine(sync_url(pg_url))
    blocker = holder.connect()
    blocker.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})  # every claim waits
    relay = OutboxRelay(
        pg_url, RecordingDriver(), claim_mode="lease", lease=0.5, unhealthy_after=0.2
    )
    running = asyncio.create_task(relay.run())
    try:
        await eventually(
            lambda: "a claim has not returned" in relay.health()["reason"], what="a hung claim"
        )
        with caplog.at_level(logging.ERROR, logger="hexa_event.outbox"):
            await asyncio.wait_for(relay.close(), 30)
        assert running.done(), "run() outlived close()"
        await running  # the claim was cut short, not the caller's task
        health = relay.health()
        assert health["state"] == "closed"
        assert "close() cancelled a claim that had not returned" in health["reason"]
        assert any("cancelled a claim" in r.getMessage() for r in caplog.records)
    finally:
        blocker.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        blocker.close()
        holder.dispose()
        if not running.done():
            running.cancel()
            await asyncio.wait({running}, timeout=10)  # whatever it ends with
        await relay.close()
