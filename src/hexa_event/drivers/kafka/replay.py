"""Replay an action's dead letters back to the channel they were emitted to.

API: ``await replay_dead_letters(driver, action)``. CLI::

    python -m hexa_event.drivers.kafka.replay kafka://127.0.0.1:9092 --action billing.charge

Reads ``<action>.dlq`` from the beginning with its own consumer group
(``<action>.dlq-replay``, so each dead letter is replayed once), republishes each record to
its ``HEXA_SOURCE_CHANNEL`` (or ``to``) with the same key, body and event id, minus the
dead-letter and retry headers, and commits it only after the broker acknowledged the copy.
It stops when it reaches the end the topic had when it started. Dead letters without a
source channel (e.g. Go hexa-event's) need ``to``; they are counted as skipped otherwise.
Note: a source channel may have other actions subscribed; they receive the replay too
(pass ``to="<action>.retry.1"`` to reach only this action).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from ... import envelope as env
from ...driver import RawRecord, SubscriptionSpec
from ...retry import dead_letter_channel
from .driver import KafkaDriver
from .options import KafkaSubscriptionOptions

log = logging.getLogger(__name__)

REPLAYED_FROM = "HEXA_REPLAYED_FROM"
"""On replayed records: the dead letter's coordinates (``<action>.dlq-<p>-<offset>``)."""
_DROPPED_HEADERS = (
    env.DEAD_LETTER_REASON,
    env.ERROR_TYPE,
    env.ERROR_MESSAGE,
    env.ATTEMPT,
    env.RETRY_AT,
    env.SOURCE_CHANNEL,
    env.SOURCE_COORDINATES,
)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: int
    skipped: int


def _end_offsets(driver: KafkaDriver, topic: str) -> dict[int, int]:
    consumer = Consumer({**driver.options.admin(), "group.id": f"{topic}-watermarks"})
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions if topic in metadata.topics else {}
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        return ends
    finally:
        consumer.close()


async def replay_dead_letters(
    driver: KafkaDriver,
    action: str,
    *,
    to: str | None = None,
    limit: int | None = None,
    idle_timeout: float = 10.0,
) -> ReplayResult:
    """Republish ``<action>.dlq``'s records (up to ``limit``); see the module docstring."""
    dlq = dead_letter_channel(action)
    await driver.provision([dlq])
    ends = await asyncio.to_thread(_end_offsets, driver, dlq)
    spec = SubscriptionSpec(
        group=f"{dlq}-replay",
        channels=(dlq,),
        start="earliest",
        prefetch=100_000,
        options=KafkaSubscriptionOptions(),
    )
    subscription = await driver.subscribe(spec)
    replayed = skipped = 0
    try:
        while ends and (limit is None or replayed + skipped < limit):
            try:
                deliveries = await asyncio.wait_for(subscription.fetch(64), idle_timeout)
            except TimeoutError:
                log.warning("dead-letter replay of %r: nothing new for %.0f s", dlq, idle_timeout)
                break
            if not deliveries:
                break
            for delivery in deliveries:
                _topic, partition, offset = delivery.coordinates.rsplit("-", 2)
                p, o = int(partition), int(offset)
                if (
                    p not in ends
                    or o >= ends[p]
                    or (limit is not None and replayed + skipped >= limit)
                ):
                    continue  # newer than the start: left unsettled, so not committed
                if o + 1 >= ends[p]:
                    del ends[p]
                record = delivery.record
                target = to or env.header_text(record.headers, env.SOURCE_CHANNEL, "")
                if not target:
                    log.warning(
                        "dead letter %s has no source channel; skipped", delivery.coordinates
                    )
                    skipped += 1
                    await delivery.ack()
                    continue
                headers = {k: v for k, v in record.headers.items() if k not in _DROPPED_HEADERS}
                headers[REPLAYED_FROM] = delivery.coordinates.encode()
                await driver.publish(
                    [RawRecord(channel=target, key=record.key, headers=headers, body=record.body)]
                )
                await delivery.ack()
                replayed += 1
    finally:
        await subscription.close()
    return ReplayResult(replayed=replayed, skipped=skipped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hexa_event.drivers.kafka.replay",
        description="Replay an action's dead letters (<action>.dlq) to their source channel.",
    )
    parser.add_argument("url", help="kafka://host:port")
    parser.add_argument("--action", required=True)
    parser.add_argument("--to", default=None, help="channel to replay to (default: the source)")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def run() -> ReplayResult:
        driver = KafkaDriver.from_url(args.url)
        try:
            return await replay_dead_letters(driver, args.action, to=args.to, limit=args.limit)
        finally:
            await driver.close()

    result = asyncio.run(run())
    sys.stdout.write(f"replayed {result.replayed}, skipped {result.skipped}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
