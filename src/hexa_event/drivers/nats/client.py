"""What the driver needs from nats-py beyond its public API, kept in one place.

:class:`Client` is nats-py's client with a faster header parser: nats-py checks every
character of every header name with a Python generator, which was the largest single cost
of receiving a record with hexa's dozen headers; the replacement gives the same result.

nats-py's ``flush()`` cancels its PONG future on timeout (and a caller's cancellation does
the same); the PONG that arrives later then hits ``set_result`` on a cancelled future
inside the client's read loop, which raises ``InvalidStateError`` there and breaks the
connection. ``Subscription.drain()`` flushes the same way. :func:`confirm` and
:func:`stop_interest` do the same jobs without ever cancelling a future the client holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from nats.aio.client import Client as _NatsClient
from nats.aio.subscription import Subscription

# str.isspace() of nats-py's check, over ASCII: \t \n \v \f \r, space and \x1c-\x1f.
_SPACE = re.compile(rb"[\t-\r \x1c-\x1f]")


class Client(_NatsClient):
    """nats-py's client, parsing header blocks without a per-character Python loop."""

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
    """Return once the server answered a PING sent after everything written so far.

    Raises TimeoutError after ``within`` seconds (the PONG is still awaited by the client,
    so a late one does no harm); cancelling the call is safe for the same reason.
    """
    pong: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    await nc._send_ping(pong)
    done, _ = await asyncio.wait({pong}, timeout=within)
    if not done:
        raise TimeoutError(f"no PONG from the NATS server within {within}s")


async def stop_interest(nc: _NatsClient, sub: Subscription, within: float) -> None:
    """Unsubscribe ``sub`` after its callback handled every message the server sent it.

    The server is told first (UNSUB), a PING round trip proves it stopped sending, then the
    messages already received run through the callback before the subscription goes away.
    Bounded by ``within`` seconds; the subscription is removed in any case.
    """
    try:
        async with asyncio.timeout(within):
            await nc._send_unsubscribe(sub._id)
            await confirm(nc, within)
            await sub._pending_queue.join()  # the callback loop marks each message done
    except (TimeoutError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
