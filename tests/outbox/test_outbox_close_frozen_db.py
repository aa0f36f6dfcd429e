"""``close()`` while the database does not answer at all (its host hangs: here a proxy in
front of it holds every byte): a claim cancelled mid-way, or a batch cut short, waited for
its connection's rollback and close, and ``close()`` for the engine's graceful disposal,
for good. Now a cancelled claim drops its connection, and ``close()`` returns within its
bound: ``lease`` for the callers, as long again (at most 5 s) for them to end once
cancelled, and as long for the engine's connections to close."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import make_url

from db_helpers import FreezingProxy, RecordingDriver, outbox_emit
from hexa_event import Event
from hexa_event.outbox import OutboxRelay
from hexa_event.testing import eventually

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("claim_mode", ["lock", "lease"])
async def test_close_returns_within_its_bound_when_the_database_hangs(
    pg_url: str, claim_mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    outbox_emit(pg_url, [Event("orders", "k", {"n": 1})])
    url = make_url(pg_url)
    proxy = await FreezingProxy(url.host or "127.0.0.1", url.port or 5432).start()
    via = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    lease = 1.0
    relay = OutboxRelay(
        via,
        RecordingDriver(),
        claim_mode=claim_mode,
        lease=lease,
        unhealthy_after=0.2,
        poll_interval=0.05,
    )
    running = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: relay.published == 1, what="the row relayed")
        proxy.freeze()  # the database stops answering
        await eventually(
            lambda: "a claim has not returned" in relay.health()["reason"], what="a hung claim"
        )
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="hexa_event.outbox"):
            await asyncio.wait_for(relay.close(), 20)
        took = time.monotonic() - started
        bound = lease + 2 * min(lease, 5.0)
        assert took < bound + 3, f"close() took {took:.1f}s, bound {bound:.1f}s"
        assert "close() cancelled a claim" in relay.health()["reason"]
        # run() ends too, its connections dropped (within SQLAlchemy's 2 s for a goodbye).
        await asyncio.wait_for(asyncio.shield(running), 10)
    finally:
        proxy.thaw()
        if not running.done():
            running.cancel()
            await asyncio.wait({running}, timeout=10)
        await proxy.close()
