"""CPU per event of the Kafka emit path, step by step, for A/B runs of the core's emit code
(run it with ``PYTHONPATH`` pointing at each tree). Run by hand (not part of ``make bench``).

``steps`` (no broker): ``kafka_emit.py``'s events (same payload, 64 keys, one context,
batches of 1,000) through each step alone, with confluent-kafka's ``Producer`` replaced by
an in-process stand-in that keeps nothing and serves every delivery report at the next
``poll``, so only our Python code is timed (librdkafka's own produce is the raw loop's too).
Prints µs per event, best of the rounds: building the events (the benchmark's own work),
sealing them (``Envelope.seal_many``), the driver's publish of sealed records (record
checks and the producer's loop), the whole ``emit_many``, the same through a telemetry
connection, and the raw loop (``produce`` with one callback, then the reports).

``broker``: the same events against the broker as ``kafka_emit.py`` sends them: process CPU
per event (client threads included) of the raw produce+flush loop, of ``emit_many`` and of
the driver alone (records sealed before timing), rounds alternating; medians.

``one MODE --count N`` runs one step once and prints nothing (for ``valgrind --tool=callgrind``:
instructions per event = (total at N2 - total at N1) / (N2 - N1)).

    python benchmarks/_kafka_emit_cpu.py steps [--count 20000] [--rounds 7]
    python benchmarks/_kafka_emit_cpu.py broker [--count 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from _harness import sealed
from kafka_emit import BATCH, IN_FLIGHT, _tick, emit_all, publish_all, raw_sync

import hexa_event as he
from hexa_event.drivers.kafka import producer as kafka_producer

KEYS = 64
TOPIC = "emit-cpu"


class _Message:
    __slots__ = ("_topic",)

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


class _Producer:
    """confluent-kafka's Producer as far as the driver uses it, without librdkafka: each
    record's delivery report (success) is served by the next ``poll``."""

    def __init__(self, config: object = None) -> None:
        self._reports: list[Callable[[Any, Any], None]] = []
        self._message = _Message(TOPIC)

    def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
        self._reports.append(kw["on_delivery"])

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        message = self._message
        for report in reports:
            report(None, message)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        return self.poll()

    def list_topics(self, *args: object, **kwargs: object) -> None:
        pass


def _events(start: int, stop: int) -> list[he.Event[Any]]:
    return [he.Event(TOPIC, f"k{n % KEYS}", _tick(n)) for n in range(start, stop)]


def _fake_driver(telemetry: bool = False) -> he.Connection:
    kafka_producer.Producer = _Producer  # type: ignore[misc]
    conn = he.connect("kafka://127.0.0.1:1")
    conn.driver.channels[TOPIC] = 3  # type: ignore[attr-defined]  # provisioned
    if telemetry:
        from hexa_event.telemetry import Telemetry

        return Telemetry().instrument(conn)
    return conn


async def _step(name: str, count: int) -> float:
    """Seconds of CPU for ``count`` events through step ``name``."""
    ctx = he.Context(correlation_id="bench")
    envelope = he.envelope.Envelope()
    batches = range(0, count, BATCH)
    if name == "events":
        began = time.process_time()
        for start in batches:
            _events(start, start + BATCH)
        return time.process_time() - began
    if name == "seal":
        lists = [_events(start, start + BATCH) for start in batches]
        began = time.process_time()
        for events in lists:
            envelope.seal_many(events, ctx)
        return time.process_time() - began
    if name == "raw":
        producer = _Producer()
        sample = envelope.seal(he.Event(TOPIC, "k0", _tick(1)), ctx)
        headers = list(sample.headers.items())
        keys = [f"k{n}".encode() for n in range(KEYS)]

        def report(err: object, _msg: object) -> None:
            pass

        began = time.process_time()
        for n in range(count):
            producer.produce(
                TOPIC, sample.body, keys[n % KEYS], headers=headers, on_delivery=report
            )
            if n % 1000 == 0:
                producer.poll(0)
        producer.flush()
        return time.process_time() - began
    conn = _fake_driver(telemetry=name == "emit_telemetry")
    emitter = conn.emitter()
    await emitter.emit(he.Event(TOPIC, "warm-up", _tick(-1)))
    semaphore = asyncio.Semaphore(IN_FLIGHT)
    if name == "publish":
        sealed = [envelope.seal_many(_events(start, start + BATCH), ctx) for start in batches]

        async def send(n: int) -> None:
            async with semaphore:
                await conn.publish(sealed[n])

        began = time.process_time()
        await asyncio.gather(*(send(n) for n in range(len(sealed))))
    else:
        lists = [_events(start, start + BATCH) for start in batches]

        async def send(n: int) -> None:
            async with semaphore:
                await emitter.emit_many(lists[n], ctx)

        began = time.process_time()
        await asyncio.gather(*(send(n) for n in range(len(lists))))
    elapsed = time.process_time() - began
    await conn.close()
    return elapsed


STEPS = ("events", "seal", "publish", "emit", "emit_telemetry", "raw")


async def steps(count: int, rounds: int) -> None:
    best: dict[str, list[float]] = {name: [] for name in STEPS}
    for _ in range(rounds):
        for name in STEPS:
            gc.collect()
            best[name].append(await _step(name, count) / count * 1e6)
    for name in STEPS:
        figures = best[name]
        best_of, median = min(figures), statistics.median(figures)
        print(f"{name:>15}: best {best_of:6.2f} µs/event, median {median:6.2f}")


async def _broker_round(name: str, count: int) -> float:
    from _kafka import BOOTSTRAP, new_topic

    if name == "raw":
        topic = new_topic("emit-cpu-raw")
        began = time.process_time()
        await asyncio.to_thread(raw_sync, topic, count)
        return (time.process_time() - began) / count * 1e6
    topic = new_topic("emit-cpu-ours")
    conn = he.connect(f"kafka://{BOOTSTRAP}")
    emitter = conn.emitter()
    await emitter.emit(he.Event(topic, "warm-up", _tick(-1)))  # connect before timing
    if name == "driver":
        records = sealed(topic, count, _tick)
        began = time.process_time()
        await publish_all(conn, records)
    else:
        began = time.process_time()
        await emit_all(emitter, topic, count)
    elapsed = time.process_time() - began
    await conn.close()
    return elapsed / count * 1e6


async def broker(count: int, rounds: int) -> None:
    names = ("raw", "emit", "driver")
    figures: dict[str, list[float]] = {name: [] for name in names}
    for number in range(1, rounds + 1):
        for name in names:
            figures[name].append(await _broker_round(name, count))
        print(f"  round {number}: " + ", ".join(f"{n} {figures[n][-1]:.2f}" for n in names))
    print(
        "process CPU µs/event, medians: "
        + ", ".join(f"{n} {statistics.median(figures[n]):.2f}" for n in names)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("steps", "broker", "one"))
    parser.add_argument("mode", nargs="?", choices=STEPS)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    if args.what == "steps":
        asyncio.run(steps(args.count or 20_000, args.rounds or 7))
    elif args.what == "broker":
        asyncio.run(broker(args.count or 50_000, args.rounds or 3))
    else:
        asyncio.run(_step(args.mode or "emit", args.count or 10_000))


if __name__ == "__main__":
    main()
