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

from .driver import Driver, SubscriptionSpec
from .retry import dead_letter_channel
from .wire import REPLAYED_FROM, replayed

logger = logging.getLogger(__name__)

__all__ = ["REPLAYED_FROM", "ReplayReport", "replay_dead_letters", "restored"]

restored = replayed
"""The record to publish for a dead letter, or None when it has nowhere to go."""


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    """Letters without a source channel, when no ``to`` was given (acked, not copied)."""
    by_channel: dict[str, int] = field(default_factory=dict)


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
            copies = []
            for delivery in deliveries:
                copy = replayed(delivery.record, delivery.coordinates, to)
                if copy is None:
                    logger.warning(
                        "dead letter %s has no source channel; skipped (pass to=)",
                        delivery.coordinates,
                    )
                    report.skipped += 1
                    continue
                copies.append(copy)
            try:
                if copies:
                    await driver.publish(copies)
            except BaseException:
                for delivery in deliveries:
                    delivery.nack()
                await asyncio.shield(subscription.settle(deliveries))
                raise
            for delivery in deliveries:
                delivery.ack()
            await subscription.settle(deliveries)
            for copy in copies:
                report.replayed += 1
                report.by_channel[copy.channel] = report.by_channel.get(copy.channel, 0) + 1
    finally:
        await subscription.close()
    logger.info("replayed %d dead letters of %s", report.replayed, action)
    return report
