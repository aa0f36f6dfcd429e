"""Kafka batch handlers: hexa-event's ``batch=he.Batch(max_size=500)`` against raw
confluent-kafka consume and FastStream's batch subscriber with manual ack.

The same work for everyone (as in ``faststream_kafka.py``, whose topic filling and contenders
this reuses): a topic (3 partitions, 64 keys) pre-filled with N events of a 200-byte JSON
body, a new consumer group reading from the start, each body decoded into a typed object,
the offsets committed after handling. Timed from the first handled event to the last.

- raw: confluent-kafka ``consume(500)``, msgspec decode into a dataclass, ``store_offsets``
  per batch. In process.
- hexa-event: a receiver with one batch handler, ``Batch(max_size=500, max_wait=0.05)``,
  which takes the list of decoded messages and returns (every message acked; settled
  ranges committed). In process.
- FastStream (aiokafka and confluent flavours): ``batch=True, max_records=500`` with
  ``AckPolicy.MANUAL`` and one ``msg.ack()`` per batch, in ``benchmarks/.bench-venv``.

Rounds alternate the contenders; medians are compared. Targets (issue 22): at least 0.35 of
raw, at least 3x FastStream's batch subscriber (its faster flavour). Each round then runs
every contender again with the collector tuned as ``hexa-event run`` tunes it (heap frozen,
young threshold raised: ``hexa_event.runner.collector``; FastStream's process does the same
calls), for the last two rows.

    python benchmarks/kafka_batch.py [--count 50000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from _benchvenv import FASTSTREAM_VERSION
from _harness import cli_parser, finish, machine, row, tuned
from _kafka import BOOTSTRAP
from faststream_kafka import (
    BODY_BYTES,
    Order,
    Setting,
    Side,
    attempt,
    faststream,
    faststream_ready,
    filled,
    ratios,
    raw,
    run_receiver,
)

import hexa_event as he

SERVICES = ("kafka",)
MAX_SIZE = 500
OURS_BUDGET = 60.0


async def ours(topic: str, count: int) -> dict[str, float]:
    """A hexa-event batch handler: rate from the first handled event to the last."""
    connection = he.connect(f"kafka://{BOOTSTRAP}")
    receiver = connection.receiver("bench")
    done = asyncio.Event()
    seen = 0
    first = last = 0.0

    @receiver.subscribe(
        topic,
        action=f"bench-batch-{uuid.uuid4().hex[:8]}",
        payload=Order,
        batch=he.Batch(max_size=MAX_SIZE, max_wait=0.05),
    )
    async def handle(ctx: he.Context, msgs: list[he.Message[Order]]) -> None:
        nonlocal seen, first, last
        last = time.perf_counter()
        if seen == 0:
            first = last
        seen += len(msgs)
        if seen >= count:
            done.set()

    began, handled = await run_receiver(connection, receiver, done, OURS_BUDGET, lambda: seen)
    if handled < 2 or last <= first:
        raise RuntimeError(f"hexa-event handled {handled} events in {OURS_BUDGET} s")
    # The first batch's events are counted when it begins: rate over the batches after it.
    return {"rate": handled / (last - first), "start_to_first": first - began, "handled": handled}


def report(
    args: argparse.Namespace, how: str, raw_side: Side, our_side: Side, sides: dict[Any, Side]
) -> list[dict[str, object]]:
    """Print one pass's rates (``how``: the collector's setting, in the rows' names); its
    two rows: ours against raw, ours against FastStream's faster flavour."""
    print(
        f"\nKafka batch consume, {BODY_BYTES}-byte JSON, typed decode, commit after handling"
        f"{how} ({args.count:,} events x {args.rounds} rounds, {machine()})"
    )
    for side in (raw_side, our_side, *sides.values()):
        if not side.rate.rates:
            print(f"  {side.rate.name:<58} not run  {side.error}")
            continue
        vs_raw, ours_vs = ratios(side, raw_side, our_side)
        median = side.rate.median
        print(f"  {side.rate.name:<58} {median:>10,.0f}/s  of raw {vs_raw:>5}  ours/it {ours_vs}")
    results: list[dict[str, object]] = [
        row(
            f"Kafka batch handler (batches of {MAX_SIZE}), typed decode, commit after handling"
            + how,
            args.count,
            raw_side.rate,
            our_side.rate,
            target=">= 0.35",
            group="batch",
            error=our_side.error or raw_side.error,
        )
    ]
    ran = [side for side in sides.values() if side.rate.rates]
    if ran:
        fastest = max(ran, key=lambda side: side.rate.median)
        results.append(
            row(
                f"Kafka batch handler vs FastStream {FASTSTREAM_VERSION} batch + manual ack{how}",
                args.count,
                fastest.rate,
                our_side.rate,
                target=">= 3",
                group="batch",
                all_peers={side.rate.name: side.rate.median for side in ran},
                raw=raw_side.median,
                error=our_side.error,
            )
        )
    return results


def parse() -> argparse.Namespace:
    return cli_parser(__doc__.splitlines()[0], 50_000, rounds=3).parse_args()


async def main() -> None:
    args = parse()
    peers = {Setting(flavour, "batch"): None for flavour in ("aiokafka", "confluent")}
    if not faststream_ready():
        peers = {}
    topic = await filled(args.count)
    raw_side = Side("raw confluent-kafka consume(500)+decode+store")
    our_side = Side(f"hexa-event batch handler, Batch(max_size={MAX_SIZE})")
    sides = {setting: Side(setting.label) for setting in peers}
    raw_tuned, our_tuned = Side(raw_side.rate.name), Side(our_side.rate.name)
    sides_tuned = {setting: Side(setting.label) for setting in peers}
    for number in range(1, args.rounds + 1):
        began = time.perf_counter()
        await attempt(raw_side, raw(topic, args.count))
        await attempt(our_side, ours(topic, args.count))
        for setting, side in sides.items():
            await attempt(side, faststream(setting, topic, args.count))
        await attempt(raw_tuned, tuned(raw)(topic, args.count))
        await attempt(our_tuned, tuned(ours)(topic, args.count))
        for setting, side in sides_tuned.items():
            await attempt(side, faststream(setting, topic, args.count, tuned=True))
        print(f"-- round {number}/{args.rounds} took {time.perf_counter() - began:.0f} s")

    results = report(args, "", raw_side, our_side, sides)
    results += report(
        args, ", collector tuned as `hexa-event run` does", raw_tuned, our_tuned, sides_tuned
    )
    finish(results, args.json)


if __name__ == "__main__":
    asyncio.run(main())
