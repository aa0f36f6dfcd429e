"""Replaying dead letters: move an action's dead letters back to the channel they came from.

Replay reads ``<action>.dlq`` as its own consumer group (``<action>.dlq-replay``), so each
dead letter is replayed once however often replay runs; it republishes the original body and
headers without the retry and error headers, keeping the event id, so idempotent handlers
(the inbox) recognise the event. Every action subscribed to the target channel receives the
replayed event again: that is what the event id is for.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from . import envelope as env
from .driver import Driver, RawRecord, SubscriptionSpec
from .retry import dead_letter_channel

logger = logging.getLogger(__name__)

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
    by_channel: dict[str, int] = field(default_factory=dict)


def restored(letter: RawRecord, channel: str | None = None) -> RawRecord:
    """The record to publish for a dead letter: original channel, key, body and headers."""
    headers = {k: v for k, v in letter.headers.items() if k not in _COPY_ONLY_HEADERS}
    target = channel or env.header_text(letter.headers, env.SOURCE_CHANNEL)
    if not target:
        raise ValueError(
            "dead letter has no HEXA_SOURCE_CHANNEL header; pass the channel to replay to"
        )
    return RawRecord(channel=target, key=letter.key, headers=headers, body=letter.body)


async def replay_dead_letters(
    driver: Driver,
    action: str,
    *,
    channel: str | None = None,
    limit: int | None = None,
    idle: float = 2.0,
) -> ReplayReport:
    """Republish ``action``'s dead letters; stop after ``limit`` or ``idle`` quiet seconds.

    A letter is acked on the dead-letter channel only after its copy was published.
    """
    report = ReplayReport()
    await driver.provision([dead_letter_channel(action)])
    subscription = await driver.subscribe(
        SubscriptionSpec(group=f"{action}.dlq-replay", channels=(dead_letter_channel(action),))
    )
    try:
        while limit is None or report.replayed < limit:
            room = 100 if limit is None else min(100, limit - report.replayed)
            try:
                async with asyncio.timeout(idle):
                    deliveries = await subscription.fetch(room)
            except TimeoutError:
                break
            if not deliveries:
                break
            for delivery in deliveries:
                try:
                    copy = restored(delivery.record, channel)
                    await driver.publish([copy])
                except Exception:
                    await delivery.nack()
                    raise
                await delivery.ack()
                report.replayed += 1
                report.by_channel[copy.channel] = report.by_channel.get(copy.channel, 0) + 1
    finally:
        await subscription.close()
    logger.info("replayed %d dead letters of %s", report.replayed, action)
    return report
