"""Publishing: every record of a batch in flight at once (Go's JSON envelope as the body,
:mod:`.protocol`), each confirmed by its PubAck. Records whose PubAck was lost to a dropped
connection or session are sent again until ``ack_timeout`` (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from ...driver import RawRecord, refuse
from ...errors import ConfigurationError, DriverError, NotStoredError
from .errors import is_session_gone, refused
from .options import check_channel
from .protocol import encode_body
from .session import SessionInterruptedError, StanNotAnsweringError, StanSession

logger = logging.getLogger(__name__)


async def publish(session: StanSession, records: Sequence[RawRecord]) -> None:
    """Store every record or raise :class:`~hexa_event.errors.DriverError`."""
    frames: list[tuple[str, bytes]] = []
    problems: dict[int, NotStoredError] = {}
    limits: dict[str, int | NotStoredError] = {}  # per channel: the largest body, or why none
    for index, record in enumerate(records):
        channel = record.channel
        limit = limits.get(channel)
        if limit is None:  # once per channel and call
            try:
                limit = session.body_limit(check_channel(channel))
            except ConfigurationError as exc:
                limit = NotStoredError(str(exc), limit="channel name")
            except NotStoredError as exc:
                limit = exc
            limits[channel] = limit
        body = encode_body(record.key, record.headers, record.body)
        if isinstance(limit, NotStoredError):
            problems[index] = limit
        elif len(body) > limit:
            max_payload = session.client().max_payload
            problems[index] = NotStoredError(
                f"record of {len(body) - limit + max_payload} bytes (with its STAN envelope) is "
                f"over the streaming server's max_payload of {max_payload} bytes; send less, "
                "or raise max_payload in its configuration",
                limit="max_payload",
            )
        else:
            frames.append((channel, body))
    if problems:
        # Before anything is sent: the server would refuse it and close the connection.
        raise refuse(len(records), problems)
    deadline = time.monotonic() + session.options.ack_timeout
    pending = frames
    attempt = 0
    backoff = 0.05
    while pending:
        attempt += 1
        await session.wait_ready(deadline - time.monotonic())
        batch = await session.publish(pending)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await batch.done.wait()
        finally:
            session.forget(batch)  # what is still unanswered (also when cancelled)
        retry: list[tuple[str, bytes]] = []
        nobody = False
        for (channel, body), outcome in zip(pending, batch.results, strict=True):
            if outcome == "":  # stored
                continue
            if isinstance(outcome, str) and not is_session_gone(outcome):
                raise refused(channel, outcome, f"a record for channel {channel!r}")
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, SessionInterruptedError
            ):
                raise outcome
            nobody = nobody or isinstance(outcome, StanNotAnsweringError)
            retry.append((channel, body))  # sent again (a lost session recovers meanwhile)
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
