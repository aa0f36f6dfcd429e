"""Publishing: every record of a batch in flight at once (Go's JSON envelope as the body,
:mod:`.wire`), each confirmed by its PubAck. Records whose PubAck was lost to a dropped
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
from .session import PublishBatch, SessionInterruptedError, StanNotAnsweringError, StanSession

logger = logging.getLogger(__name__)


async def publish(session: StanSession, records: Sequence[RawRecord]) -> None:
    """Store every record or raise :class:`~hexa_event.errors.DriverError`."""
    frames: list[tuple[int, str, bytes]] = []
    problems: dict[int, NotStoredError] = {}
    limits: dict[str, int | NotStoredError] = {}  # per channel: the largest body, or why none
    for index, record in enumerate(records):
        channel = record.channel
        limit = limits.get(channel)
        if limit is None:  # once per channel and call
            try:
                limit = session.refusal(check_channel(channel), 0) or session.data_limit(channel)
            except ConfigurationError as exc:
                limit = NotStoredError(str(exc), limit="channel name")
            limits[channel] = limit
        if isinstance(limit, NotStoredError):
            problems[index] = limit
            continue
        body = encode_body(record.key, record.headers, record.body)
        refusal = session.refusal(channel, len(body)) if len(body) > limit else None
        if refusal is not None:
            problems[index] = refusal
            continue
        frames.append((index, channel, body))
    if problems:
        # Before anything is sent: the server would refuse it and close the connection.
        raise refuse(len(records), problems)
    deadline = time.monotonic() + session.options.ack_timeout
    batch = PublishBatch(len(frames))
    pending = frames
    attempt = 0
    backoff = 0.05
    while pending:
        attempt += 1
        await session.wait_ready(deadline - time.monotonic())
        batch.expect([index for index, _, _ in pending])
        await session.publish(batch, pending)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await batch.done.wait()
        session.forget(batch)  # what is still unanswered
        retry: list[tuple[int, str, bytes]] = []
        nobody = False
        for frame in pending:
            outcome = batch.results[frame[0]]
            if outcome == "":  # stored
                continue
            if isinstance(outcome, str) and not is_session_gone(outcome):
                raise refused(frame[1], outcome, f"a record for channel {frame[1]!r}")
            if isinstance(outcome, BaseException) and not isinstance(
                outcome, SessionInterruptedError
            ):
                raise outcome
            nobody = nobody or isinstance(outcome, StanNotAnsweringError)
            retry.append(frame)  # sent again (a lost session recovers meanwhile)
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
