"""CPU time per event of the Kafka batch handler against raw confluent-kafka, in one
process (client threads included): a measure that a loaded machine disturbs far less than
rates. ``kafka_batch.py``'s work (same topic filling, same handler); rounds alternate.
Run by hand (not part of ``make bench``):

    python benchmarks/_kafka_batch_cpu.py [--count 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faststream_kafka import fill, raw
from kafka_batch import ours

SERVICES = ("kafka",)


async def cpu_per_event(run: Callable[[str, int], Awaitable[dict[str, Any]]], count: int) -> float:
    """µs of process CPU per event for one run over a freshly filled topic."""
    topic = await asyncio.to_thread(fill, count)
    began = time.process_time()
    await run(topic, count)
    return (time.process_time() - began) / count * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raws: list[float] = []
    mine: list[float] = []
    for number in range(1, args.rounds + 1):
        raws.append(await cpu_per_event(raw, args.count))
        mine.append(await cpu_per_event(ours, args.count))
        print(f"  round {number}: raw {raws[-1]:.2f} µs/event, ours {mine[-1]:.2f} µs/event")
    r, o = statistics.median(raws), statistics.median(mine)
    print(f"medians: raw {r:.2f} µs CPU/event, batch handler {o:.2f}; raw/ours {r / o:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
