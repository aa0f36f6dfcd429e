"""A Kafka receiver served by the runner with its collector tuning and without
(``gc_tuning=False``), alternating, each run in a new process: the process's CPU per event
(librdkafka's threads and the start included), the collector's time per event and the RSS
every 25,000 events. Shows what
``hexa_event.runner.collector`` gains and that memory does not grow (docs/deploy.md, "The
garbage collector"). Run by hand (not part of ``make bench``):

    python benchmarks/_runner_collector.py [--count 250000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from _harness import Collections
from _kafka import BOOTSTRAP
from kafka_consume import Tick, fill

import hexa_event as he
from hexa_event.runner import Service

STEP = 25_000


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def served(count: int, tuning: bool) -> dict[str, object]:
    """A receiver served until it handled ``count``: CPU and collector µs per event, RSS."""
    topic = await asyncio.to_thread(fill, count)
    driver = he.connect(f"kafka://{BOOTSTRAP}")
    receiver = driver.receiver("collector", concurrency=256)
    done = asyncio.Event()
    seen = 0
    samples: list[int] = []

    @receiver.subscribe(topic, action=f"gc-{uuid.uuid4().hex[:8]}", payload=Tick)
    async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
        nonlocal seen
        seen += 1
        if seen % STEP == 0:
            samples.append(round(rss_mib()))
        if seen == count:
            done.set()

    service = Service(receiver, gc_tuning=tuning)

    async def stop_when_done() -> None:
        await done.wait()
        service.stop()

    collections = Collections()
    gc.callbacks.append(collections)
    began = time.process_time()
    await asyncio.gather(he.serve(service, handle_signals=False), stop_when_done())
    cpu = time.process_time() - began
    gc.callbacks.remove(collections)
    await driver.close()
    return {"cpu": cpu / count * 1e6, "gc": collections.seconds / count * 1e6, "rss": samples}


def one_run(count: int, tuning: bool) -> dict[str, object]:
    """:func:`served` in a new process (each run starts from the same heap)."""
    argv = [sys.executable, __file__, "--count", str(count), "--one", "tuned" if tuning else ""]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=250_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(await served(args.count, bool(args.one))))
        return
    runs: dict[bool, list[dict[str, object]]] = {True: [], False: []}
    for _ in range(args.pairs):
        for tuning in (False, True):
            got = await asyncio.to_thread(one_run, args.count, tuning)
            runs[tuning].append(got)
            name = "tuned  " if tuning else "untuned"
            print(
                f"  {name} {got['cpu']:5.1f} µs/event, collector {got['gc']:4.2f}; "
                f"RSS MiB every {STEP:,}: {got['rss']}",
                flush=True,
            )
    for tuning, name in ((True, "tuned"), (False, "untuned (--no-gc-tuning)")):
        cpu = statistics.median(float(r["cpu"]) for r in runs[tuning])  # type: ignore[arg-type]
        collector = statistics.median(float(r["gc"]) for r in runs[tuning])  # type: ignore[arg-type]
        print(f"median {name}: {cpu:.1f} µs/event, collector {collector:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
