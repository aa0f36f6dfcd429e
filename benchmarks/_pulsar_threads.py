"""Where a Pulsar consumer's time goes, per thread: one measured run in this process.

    HEXA_PULSAR_URL=pulsar://127.0.0.1:6650 python benchmarks/_pulsar_threads.py KIND \
        [--count 20000] [--topic TOPIC] [--gc]

KIND is one of ``pulsar_bench.py``'s consume paths: ``raw_sync`` (a thread blocking in
``receive()``), ``raw_batch`` (``batch_receive``), ``driver`` (fetch / ack / settle) or
``receiver`` (a receiver with a trivial handler; measured from ``start()`` returned, as the
others are from being subscribed; before 2026-12-07 the receiver's figures included its
start: provisioning its retry topics and subscribing). The topic is filled first (or ``--topic``
names one filled before), outside the measurement. Prints one JSON line: the rate, the
process CPU per event, and per thread (pulsar-client's own threads are named ``python``,
their name from the process) the CPU per event, voluntary and involuntary context switches
per 1,000 events and the time spent runnable but waiting for a core (``/proc``
``schedstat``), all in µs per event; for ``driver`` and ``receiver`` also the time the event
loop sat idle in ``select`` with nothing to run (``select_us``; polls with callbacks ready
are only counted), and with ``--gc`` the collector's time per generation.

What is left of the loop thread's wall time per event once its CPU, its run-queue wait and
its idle ``select`` are taken out is time it waited for the GIL or a lock. On a shared
machine run several rounds in fresh processes, alternating the trees compared, and compare
medians: a shell loop over ``PYTHONPATH=<tree>/src python <tree>/benchmarks/_pulsar_threads.py
receiver`` is enough.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

import msgspec
import pulsar
import pulsar_bench as bench
from _harness import thread_times

import hexa_event as he
from hexa_event.driver import SubscriptionSpec


class Probe:
    """Snapshots at the start and the end of the measured part, the loop's idle time in
    ``select`` and the collector's time per generation."""

    def __init__(self, count: int, collector: bool) -> None:
        self.count = count
        self.marks: dict[str, tuple[dict[int, Any], float, float]] = {}
        self.names: dict[int, str] = {}
        self.idle = 0.0
        self.polls = self.waits = 0
        self.collected: dict[str, float] = {}
        self._began = 0.0
        if collector:
            gc.callbacks.append(self._collecting)

    def _collecting(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        key = f"gen{info['generation']}"
        self.collected[key + "_ms"] = (
            self.collected.get(key + "_ms", 0.0) + (time.perf_counter() - self._began) * 1e3
        )
        self.collected[key + "_n"] = self.collected.get(key + "_n", 0) + 1

    def watch_select(self) -> None:
        """Time the running loop spends in ``select`` (idle, or a ready poll)."""
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        select = selector.select

        def timed(timeout: float | None = None) -> Any:
            if timeout == 0:  # callbacks were ready: a poll, not a wait
                self.polls += 1
                return select(timeout)
            began = time.perf_counter()
            try:
                return select(timeout)
            finally:
                self.idle += time.perf_counter() - began
                self.waits += 1

        selector.select = timed

    def mark(self, label: str) -> None:
        self.marks[label] = (thread_times(), time.process_time(), time.perf_counter())
        self.names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id})
        if label == "start":
            self.idle = 0.0
            self.polls = self.waits = 0
            self.collected.clear()

    def report(self, kind: str) -> dict[str, Any]:
        before, cpu0, wall0 = self.marks["start"]
        after, cpu1, wall1 = self.marks["end"]
        per: dict[str, list[float]] = {}
        for tid, (comm, cpu, vol, invol, waited) in after.items():
            base = before.get(tid, (comm, 0.0, 0, 0, 0.0))
            name = "loop" if tid == os.getpid() else self.names.get(tid, comm).split(":")[0]
            row = per.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate((cpu, vol, invol, waited)):
                row[i] += value - base[i + 1]
        n = self.count
        return {
            "kind": kind,
            "rate": n / (wall1 - wall0),
            "wall_us": (wall1 - wall0) / n * 1e6,
            "cpu_us": (cpu1 - cpu0) / n * 1e6,
            "select_us": self.idle / n * 1e6,
            "select_waits_per_1000": self.waits * 1000 / n,
            "select_polls_per_1000": self.polls * 1000 / n,
            "threads": {
                name: {
                    "cpu_us": round(cpu / n * 1e6, 2),
                    "voluntary_per_1000": round(vol * 1000 / n, 1),
                    "involuntary_per_1000": round(invol * 1000 / n, 1),
                    "runnable_us": round(waited / n * 1e6, 2),
                }
                for name, (cpu, vol, invol, waited) in per.items()
                if cpu or vol or invol
            },
            "collector": self.collected,
            "load": os.getloadavg()[0],
        }


def raw(probe: Probe, topic: str, batches: bool) -> None:
    decoder = msgspec.json.Decoder(bench.Tick)
    client = pulsar.Client(bench.URL)
    options: dict[str, Any] = dict(bench.SUBSCRIPTION)
    if batches:
        options["batch_receive_policy"] = pulsar.ConsumerBatchReceivePolicy(
            bench.RAW_BATCH, 0, bench.RAW_BATCH_WAIT_MS
        )
    consumer = client.subscribe(bench.full(topic), f"raw-{uuid.uuid4().hex[:6]}", **options)
    probe.mark("start")
    done = 0
    while done < probe.count:
        for message in consumer.batch_receive() if batches else [consumer.receive()]:
            bench.read(decoder, message)
            consumer.acknowledge(message)
            done += 1
    probe.mark("end")
    consumer.close()
    client.close()


async def driver(probe: Probe, topic: str) -> None:
    decoder = msgspec.json.Decoder(bench.Tick)
    connection = he.connect(bench.URL)
    probe.watch_select()
    subscription = await connection.subscribe(
        SubscriptionSpec(group=f"ours-{uuid.uuid4().hex[:6]}", channels=(topic,))
    )
    probe.mark("start")
    await bench.fetch_all(subscription, decoder, probe.count)
    probe.mark("end")
    await subscription.close()
    await connection.close()


async def receiver(probe: Probe, topic: str) -> None:
    connection = he.connect(bench.URL)
    probe.watch_select()
    receiver = connection.receiver("bench")
    finished = asyncio.Event()
    seen = 0

    async def handle(ctx: he.Context, msg: Any) -> None:
        nonlocal seen
        seen += 1
        if seen >= probe.count:
            finished.set()

    action = f"ours-{uuid.uuid4().hex[:6]}"
    receiver.subscribe(topic, action=action, payload=bench.Tick, handler=handle)
    await receiver.start()  # subscribed, as the raw loops and the driver are at "start"
    probe.mark("start")
    await asyncio.wait_for(finished.wait(), 300)
    probe.mark("end")
    await receiver.close()
    await connection.close()


def raw_emit(probe: Probe) -> None:
    """``pulsar_bench.raw_emit_callback_sync``, marked around its timed part."""
    bench.raw_emit_callback_sync(probe.count, mark=probe.mark)


async def emit(probe: Probe) -> None:
    """``pulsar_bench.ours_emit``'s emits, marked around its timed part."""
    topic = bench.topic_name("emit-ours")
    connection = he.connect(bench.URL)
    probe.watch_select()
    emitter = connection.emitter()
    await emitter.emit(he.Event(topic, "warm-up", bench._tick(-1)))  # connect before timing
    probe.mark("start")
    await bench.emit_all(emitter, topic, probe.count)
    probe.mark("end")
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "kind", choices=("raw_sync", "raw_batch", "driver", "receiver", "raw_emit", "emit")
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--topic", help="a topic already holding --count events")
    parser.add_argument("--gc", action="store_true", help="time the collector per generation")
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval for the run (CPython's default: 0.005 s)",
    )
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    probe = Probe(args.count, args.gc)
    if args.kind == "raw_emit":
        raw_emit(probe)
    elif args.kind == "emit":
        asyncio.run(emit(probe))
    else:
        consume(probe, args.kind, args.topic or asyncio.run(bench.fill(args.count)))
    print(json.dumps({**probe.report(args.kind), "switch_interval": sys.getswitchinterval()}))


def consume(probe: Probe, kind: str, topic: str) -> None:
    if kind in ("raw_sync", "raw_batch"):
        raw(probe, topic, batches=kind == "raw_batch")
    elif kind == "driver":
        asyncio.run(driver(probe, topic))
    else:
        asyncio.run(receiver(probe, topic))


if __name__ == "__main__":
    main()
