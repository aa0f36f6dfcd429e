"""Replaying dead letters: move an action's dead letters back to the channel they came from.

Replay reads ``<action>.dlq`` as its own consumer group (``<action>.dlq-replay``), so each
dead letter is replayed once however often replay runs; it republishes the original key,
body and headers without the retry and error headers, keeping the event id so idempotent
handlers (the inbox) recognise the event, and marks the copy with ``HEXA_REPLAYED_FROM``.
A letter is acked only after its copy was published.

Every action subscribed to the source channel receives the replayed event again (that is
what the event id is for); pass ``to="<action>.retry.1"`` to reach only the failed action.
Letters without ``HEXA_SOURCE_CHANNEL`` (Go hexa-event's, for example) need ``to`` and are
skipped otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from . import envelope as env
from .driver import Driver, RawRecord, SubscriptionSpec
from .errors import DecodeError
from .retry import dead_letter_channel

logger = logging.getLogger(__name__)

REPLAYED_FROM = "HEXA_REPLAYED_FROM"
"""On replayed records: the coordinates of the dead letter they were copied from."""

_COPY_ONLY_HEADERS = (
    env.ATTEMPT,
    env.RETRY_AT,
    env.DEAD_LETTER_REASON,
    env.ERROR_TYPE,
    env.ERROR_MESSAGE,
    env.SOURCE_CHANNEL,
    env.SOURCE_COORDINATES,
    env.ROOT_ACTION,
)


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    """Letters without a source channel, when no ``to`` was given (acked, not copied)."""
    by_channel: dict[str, int] = field(default_factory=dict)


def restored(letter: RawRecord, coordinates: str, to: str | None = None) -> RawRecord | None:
    """The record to publish for a dead letter, or None when it has nowhere to go."""
    target = to or _source_channel(letter)
    if not target:
        return None
    headers = {k: v for k, v in letter.headers.items() if k not in _COPY_ONLY_HEADERS}
    headers[REPLAYED_FROM] = coordinates.encode()
    return RawRecord(channel=target, key=letter.key, headers=headers, body=letter.body)


def _source_channel(letter: RawRecord) -> str:
    try:
        return env.header_text(letter.headers, env.SOURCE_CHANNEL)
    except DecodeError:
        return ""


async def replay_dead_letters(
    driver: Driver,
    action: str,
    *,
    to: str | None = None,
    limit: int | None = None,
    idle_timeout: float = 10.0,
) -> ReplayReport:
    """Republish ``action``'s dead letters; stop after ``limit`` of them, or once nothing
    arrived for ``idle_timeout`` seconds (allow for joining the group on slow brokers)."""
    report = ReplayReport()
    await driver.provision([dead_letter_channel(action)])
    subscription = await driver.subscribe(
        SubscriptionSpec(group=f"{action}.dlq-replay", channels=(dead_letter_channel(action),))
    )
    try:
        while limit is None or report.replayed < limit:
            room = 100 if limit is None else min(100, limit - report.replayed)
            try:
                async with asyncio.timeout(idle_timeout):
                    deliveries = await subscription.fetch(room)
            except TimeoutError:
                break
            if not deliveries:
                break
            for delivery in deliveries:
                copy = restored(delivery.record, delivery.coordinates, to)
                if copy is None:
                    logger.warning(
                        "dead letter %s has no source channel; skipped (pass to=)",
                        delivery.coordinates,
                    )
                    report.skipped += 1
                    await delivery.ack()
                    continue
                try:
                    await driver.publish([copy])
                except BaseException:
                    await delivery.nack()
                    raise
                await delivery.ack()
                report.replayed += 1
                report.by_channel[copy.channel] = report.by_channel.get(copy.channel, 0) + 1
    finally:
        await subscription.close()
    logger.info("replayed %d dead letters of %s", report.replayed, action)
    return report
