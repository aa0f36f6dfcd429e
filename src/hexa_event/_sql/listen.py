"""The PostgreSQL ``LISTEN`` loop: wake-ups from other processes' commits.

One connection of the engine's pool listens on one channel (asyncpg only; other DBAPIs
poll). When the connection is lost the loop reconnects with back-off; on every (re)connect
it calls ``on_connected`` so the caller catches up on what was committed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .engine import GOODBYE_WAIT, let_go
from .problems import brief

logger = logging.getLogger(__name__)


async def listen(
    engine: AsyncEngine,
    channel: str,
    on_notify: Callable[[str], None],
    *,
    on_connected: Callable[[], None] = lambda: None,
    on_lost: Callable[[], None] = lambda: None,
    stop: asyncio.Event | None = None,
    max_backoff: float = 5.0,
) -> None:
    """Call ``on_notify(payload)`` for each NOTIFY on ``channel`` until ``stop`` is set or
    the task is cancelled. Returns at once when the engine does not use asyncpg."""
    stop = stop or asyncio.Event()
    backoff = 0.5
    while not stop.is_set():
        lost = asyncio.Event()
        try:
            conn = await engine.connect()
            try:
                if not await _listen_on(
                    conn, channel, on_notify, on_connected, on_lost, lost, stop
                ):
                    await let_go(conn, wait=GOODBYE_WAIT)
                    return
            except BaseException as exc:
                # Cancelled: drop the connection (the server forgets its LISTEN), a goodbye
                # to a database that does not answer would wait for good.
                await let_go(conn, wait=GOODBYE_WAIT if isinstance(exc, Exception) else 0)
                raise
            await let_go(conn, wait=GOODBYE_WAIT)
            backoff = 0.5  # it was connected: lost now, reconnect soon
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("LISTEN %s: connection failed or lost (%s)", channel, brief(exc))
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff):
                await stop.wait()
        backoff = min(backoff * 2, max_backoff)


async def _listen_on(
    conn: AsyncConnection,
    channel: str,
    on_notify: Callable[[str], None],
    on_connected: Callable[[], None],
    on_lost: Callable[[], None],
    lost: asyncio.Event,
    stop: asyncio.Event,
) -> bool:
    """LISTEN on ``conn`` until ``lost`` or ``stop``; False when it is not asyncpg."""
    raw = await conn.get_raw_connection()
    apg: Any = raw.driver_connection
    if apg is None or not hasattr(apg, "add_listener"):
        logger.info("LISTEN %s: the engine is not asyncpg; polling only", channel)
        return False

    def notified(_c: Any, _pid: int, _channel: str, payload: str) -> None:
        on_notify(payload)

    def terminated(_c: Any, event: asyncio.Event = lost) -> None:
        event.set()

    apg.add_termination_listener(terminated)
    await apg.add_listener(channel, notified)
    on_connected()
    try:
        waiters = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    finally:
        on_lost()
    if lost.is_set() or apg.is_closed():
        await conn.invalidate()
    else:
        apg.remove_termination_listener(terminated)
        await asyncio.wait_for(apg.remove_listener(channel, notified), GOODBYE_WAIT)
    return True
