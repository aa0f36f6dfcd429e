"""CPU time per event of the Kafka batch handler against raw confluent-kafka, in one
process (client threads included): a measure that a loaded machine disturbs far less than
rates. ``kafka_batch.py``'s work (same topic filling, same handler); rounds alternate. For
ours it also prints the event-loop thread's CPU and the garbage collector's time per event
(with ``--freeze``, objects alive at start are frozen first, as a service may do with
``gc.freeze()``; with ``--tuned``, the collector is tuned as ``hexa-event run`` tunes it).
``--receiver`` measures the single-message receiver instead (the one of
``faststream_kafka.py``, concurrency 256). Run by hand (not part of ``make bench``):

    python benchmarks/_kafka_batch_cpu.py [--count 30000] [--rounds 3] [--freeze | --tuned]
        [--receiver]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import Collections
from faststream_kafka import fill, raw
from faststream_kafka import ours as receiver
from kafka_batch import ours

from hexa_event.runner import collector as runner_collector

SERVICES = ("kafka",)


async def cpu_per_event(
    run: Callable[[str, int], Awaitable[dict[str, Any]]], count: int
) -> tuple[float, float, float]:
    """µs per event for one run over a freshly filled topic: process CPU, event-loop
    thread CPU, garbage collector."""
    topic = await asyncio.to_thread(fill, count)
    collections = Collections()
    gc.callbacks.append(collections)
    try:
        began, began_thread = time.process_time(), time.thread_time()
        await run(topic, count)
        process, thread = time.process_time() - began, time.thread_time() - began_thread
    finally:
        gc.callbacks.remove(collections)
    return process / count * 1e6, thread / count * 1e6, collections.seconds / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() before the rounds")
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="the collector tuned as `hexa-event run` tunes it (heap frozen, young threshold "
        "raised), for both sides",
    )
    parser.add_argument(
        "--receiver", action="store_true", help="the single-message receiver, not batches"
    )
    args = parser.parse_args()
    mine_run, name = (receiver, "receiver") if args.receiver else (ours, "batch handler")
    if args.freeze:
        gc.freeze()
    if args.tuned:
        runner_collector.tune()
    raws: list[float] = []
    mine: list[tuple[float, float, float]] = []
    for number in range(1, args.rounds + 1):
        raws.append((await cpu_per_event(raw, args.count))[0])
        mine.append(await cpu_per_event(mine_run, args.count))
        process, thread, collector = mine[-1]
        print(
            f"  round {number}: raw {raws[-1]:.2f} µs/event, ours {process:.2f} µs/event "
            f"(event loop {thread:.2f}, garbage collector {collector:.2f})"
        )
    r = statistics.median(raws)
    o, t, c = (statistics.median(m[i] for m in mine) for i in range(3))
    print(
        f"medians: raw {r:.2f} µs CPU/event, {name} {o:.2f} (event loop {t:.2f}, "
        f"garbage collector {c:.2f}); raw/ours {r / o:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
