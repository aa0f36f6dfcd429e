"""Publishing: every record of a batch in flight at once, each confirmed by its PubAck.

A record goes to the STAN channel named by its ``channel`` with Go's JSON envelope as the
body (see :mod:`.wire`). ``publish`` returns once the server acknowledged every record
(after its store flush). Records whose acknowledgement was lost to a dropped connection or
session are sent again once the session is back, until ``ack_timeout``: a record may then be
stored twice, which the consumers recognise by its event id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from ...driver import RawRecord
from ...errors import DriverError
from .errors import StanChannelLimitError, is_channel_limit, is_session_gone
from .options import check_channel
from .session import SessionInterruptedError, StanNotAnsweringError, StanSession
from .wire import encode_body

logger = logging.getLogger(__name__)


class StanProducer:
    """Publishes batches of records on one session."""

    def __init__(self, session: StanSession) -> None:
        self._session = session
        self._checked: set[str] = set()

    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Store every record or raise :class:`~hexa_event.errors.DriverError`."""
        if not records:
            return
        session = self._session
        frames: list[tuple[str, bytes]] = []
        for record in records:
            channel = record.channel
            if channel not in self._checked:
                check_channel(channel)
                self._checked.add(channel)
            frames.append((channel, encode_body(record.key, record.headers, record.body)))
        deadline = time.monotonic() + session.options.ack_timeout
        pending = list(range(len(frames)))
        attempt = 0
        backoff = 0.05
        while pending:
            attempt += 1
            await session.wait_ready(deadline - time.monotonic())
            futures = [await session.publish(*frames[i]) for i in pending]
            await _wait_all(futures, deadline - time.monotonic())
            retry: list[int] = []
            unanswered: list[asyncio.Future[str]] = []
            nobody = False
            for index, future in zip(pending, futures, strict=True):
                if not future.done():
                    unanswered.append(future)
                    retry.append(index)
                    continue
                exc = future.exception()
                if exc is not None:
                    if isinstance(exc, SessionInterruptedError):
                        nobody = nobody or isinstance(exc, StanNotAnsweringError)
                        retry.append(index)
                        continue
                    raise exc
                error = future.result()
                if not error:
                    continue
                channel = frames[index][0]
                if is_channel_limit(error):
                    raise StanChannelLimitError(channel, error)
                if is_session_gone(error):
                    retry.append(index)  # the session recovers in the background
                    continue
                raise DriverError(
                    f"the NATS Streaming server refused a record for channel {channel!r}: {error}",
                    retriable=False,
                )
            if unanswered:
                session.forget(unanswered)
            pending = retry
            if pending and time.monotonic() >= deadline:
                raise DriverError(
                    f"{len(pending)} of {len(frames)} records were not acknowledged by the "
                    f"NATS Streaming server within {session.options.ack_timeout:g}s "
                    f"({session.error or 'no PubAck'}); any subset may be stored"
                )
            if nobody:  # the server is starting: do not hammer it
                await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 1.0)
            if pending:
                logger.info(
                    "STAN: re-sending %d of %d records (attempt %d): %s",
                    len(pending),
                    len(frames),
                    attempt + 1,
                    session.error or "acknowledgements lost",
                )


async def _wait_all(futures: list[asyncio.Future[str]], within: float) -> None:
    """Wait until every future is done or ``within`` seconds pass (futures are never cancelled)."""
    remaining = len([f for f in futures if not f.done()])
    if not remaining:
        return
    done = asyncio.Event()

    def one_done(_: asyncio.Future[str]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0:
            done.set()

    for future in futures:
        if not future.done():
            future.add_done_callback(one_done)
    try:
        async with asyncio.timeout(max(0.0, within)):
            await done.wait()
    except TimeoutError:
        pass
    finally:
        for future in futures:
            future.remove_done_callback(one_done)
