"""What the driver needs from nats-py beyond its public API, kept in one place: a faster
header parser, a flush and a drain that never cancel a future the client holds and learn
at once of a reconnect (why: docs/engines/nats.md, "Internals"); and the loops' shared
wait and failure report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

import nats.errors
from nats.aio.client import Client as _NatsClient
from nats.aio.subscription import Subscription

from ...errors import DriverError

log = logging.getLogger(__name__)

# str.isspace() of nats-py's check, over ASCII: \t \n \v \f \r, space and \x1c-\x1f.
_SPACE = re.compile(rb"[\t-\r \x1c-\x1f]")


class Client(_NatsClient):
    """nats-py's client, parsing header blocks without a per-character Python loop,
    answering the PONGs a dropped connection owed (:meth:`_process_connect_init`), and
    sending a PING after the commands queued before it (:meth:`_send_ping`)."""

    async def _process_connect_init(self) -> None:
        """(Re)connect, then answer ``False`` every PONG the old connection owed: nats-py
        starts a new list of them on each connect and never answers the old one's, so a
        :func:`confirm` sent before a reconnect waited out its whole timeout (a settle
        held its deliveries, and with them the prefetch window, for 5 heartbeats)."""
        owed = self._pongs
        await super()._process_connect_init()
        for pong in owed:
            if not pong.done():
                pong.set_result(False)

    async def _send_ping(self, future: asyncio.Future[bool] | None = None) -> None:
        """Write the commands still queued, then the PING: nats-py writes a PING straight to
        the socket, ahead of acks and publishes waiting for its flusher, so a PONG (a
        :func:`confirm`, a ``flush()``) vouched for nothing queued before it."""
        transport = self._transport
        if transport is not None and self._pending and self.is_connected:
            transport.writelines(self._pending[:])
            self._pending = []
            self._pending_data_size = 0
        await super()._send_ping(future)

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip()
            if not name.isascii() or _SPACE.search(name):
                continue  # what nats-py skips: a name that is not an ASCII token
            out[name.decode("ascii")] = value.strip().decode("utf-8", "replace")
        return out


async def confirm(nc: _NatsClient, within: float) -> None:
    """Return once the server answered a PING sent after everything written so far;
    TimeoutError after ``within`` seconds, at once while the client is not connected (a
    PING sent then goes to a closed or half-open socket), or as soon as it reconnected
    before the answer (what was written may be lost with the old connection; with our
    :class:`Client`). A late PONG, or a cancellation, does no harm."""
    if not nc.is_connected:
        raise TimeoutError("not connected to a NATS server (reconnecting)")
    pong: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    await nc._send_ping(pong)
    done, _ = await asyncio.wait({pong}, timeout=within)
    if not done:
        raise TimeoutError(f"no PONG from the NATS server within {within}s")
    if not pong.result():
        raise TimeoutError("the connection to the NATS server dropped before its PONG")


async def stop_interest(nc: _NatsClient, sub: Subscription, within: float, linger: float) -> None:
    """Unsubscribe ``sub`` once its callback handled every message the server sent it
    (UNSUB, a PING round trip, then the queue drains); bounded by ``within`` seconds, after
    which ``sub`` lingers ``linger`` s more: what the server sent late still reaches it."""
    late = False
    try:
        async with asyncio.timeout(within):
            await nc._send_unsubscribe(sub._id)
            await confirm(nc, within)
            await sub._pending_queue.join()  # the callback loop marks each message done
    except (TimeoutError, OSError):
        late = True
        asyncio.get_running_loop().call_later(linger, lambda: asyncio.ensure_future(_leave(sub)))
    finally:
        if not late:
            await _leave(sub)


async def _leave(sub: Subscription) -> None:
    with contextlib.suppress(Exception):
        await sub.unsubscribe()


def retrying(what: str, exc: Exception) -> str:
    """``<what>: <exc>``, logged before a retry (with the traceback for an unexpected kind)."""
    text = f"{what}: {exc or type(exc).__name__}"
    known = isinstance(exc, DriverError | nats.errors.Error | TimeoutError | ValueError)
    log.warning("%s; retrying", text, exc_info=not known)
    return text


def stopped(task: asyncio.Task[None] | None, what: str) -> str:
    """``<what> stopped (<its exception>)`` once ``task`` ended, else ""."""
    if task is None or not task.done():
        return ""
    return f"{what} stopped ({task.exception() if not task.cancelled() else None!r})"


async def woken(event: asyncio.Event, within: float) -> None:
    """Clear ``event``, then wait until it is set again or ``within`` seconds passed."""
    event.clear()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await event.wait()
