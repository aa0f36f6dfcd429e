"""``Inbox.close()`` while the database does not answer at all (its host hangs: a proxy in
front of it holds every byte): the engine's graceful disposal waited for good, and with it
whatever closed the inbox (a service's shutdown). Now it returns within ``GOODBYE_WAIT``
(5 s), the connections dropped unclosed, and says so in one ERROR line."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from sqlalchemy import make_url

from db_helpers import FreezingProxy
from hexa_event import Context
from hexa_event.inbox import Inbox

pytestmark = pytest.mark.postgres


async def test_close_returns_within_its_bound_when_the_database_hangs(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(pg_url)
    proxy = await FreezingProxy(url.host or "127.0.0.1", url.port or 5432).start()
    via = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    inbox = Inbox(via)
    try:
        # One check opens a pooled connection, which close() must then let go of.
        assert not await inbox.seen(Context(event_id="e-frozen", handler_action="a"))
        proxy.freeze()  # the database stops answering
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="hexa_event.inbox"):
            await asyncio.wait_for(inbox.close(), 30)
        took = time.monotonic() - started
        assert took < 5.0 + 3, f"close() took {took:.1f}s"
        assert "the database did not answer within 5s" in caplog.text
    finally:
        proxy.thaw()
        await proxy.close()


async def test_close_of_an_answering_database_is_quiet(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(pg_url)
    assert not await inbox.seen(Context(event_id="e-quiet", handler_action="a"))
    with caplog.at_level(logging.ERROR, logger="hexa_event.inbox"):
        await asyncio.wait_for(inbox.close(), 10)
        await inbox.close()  # idempotent
    assert not caplog.records
