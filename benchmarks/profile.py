"""Per-event cost breakdown of the memory end-to-end and Kafka consume paths (cProfile).

    python benchmarks/profile.py [--paths memory,kafka,kafka-batch,pulsar,stan] [--count 20000]
        [--top 25]

``kafka-batch`` profiles ``kafka_batch.py``'s batch handler (batches of 500). ``pulsar``
and ``stan`` profile the paths listed in ``PROFILED`` of ``pulsar_bench.py`` and
``stan_bench.py`` (emit, receiver, driver alone; topics are filled before, out of the
profile). Runs each path once unprofiled (the real rate), then once under cProfile, and
prints the event loop thread's own time per event grouped by layer, then the top functions by own
time. Time in C functions (msgspec, dict building, librdkafka calls) is charged to the
layer of the Python function that called them; time the loop spends idle in ``select`` is
left out. Threads (the Kafka driver's blocking client calls, the Pulsar driver's receive
threads, sync handlers) are not in the
profile. cProfile slows Python code several-fold, so read the shares, not the absolute µs:
the "per event, unprofiled" line is the real cost. The unprofiled runs are timed twice:
as a receiver runs in your process, then with the collector tuned as ``hexa-event run`` tunes it
(``hexa_event.runner.collector``), each with the garbage collector's time per generation.

Layers, by module: driver (``hexa_event/driver.py``, ``drivers/``, confluent-kafka), emit
(emitter, envelope, event, ids), wire/dispatch (wire, dispatch, retry, errors),
lanes/receiver (lanes, receiver, threads), codec (codecs, msgspec), context (context,
propagation, middleware, telemetry), asyncio (the event loop, tasks, futures), benchmark
(the handler and the benchmark's own loop).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

# This file shares its name with the stdlib's ``profile``, which cProfile imports: load the
# stdlib modules with this folder off the path, then put it back for the benchmark modules.
_HERE = sys.path.pop(0)
import cProfile  # noqa: E402
import pstats  # noqa: E402

sys.path.insert(0, _HERE)

from hexa_event.runner import collector  # noqa: E402

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("driver", ("hexa_event/driver.py", "hexa_event/drivers/", "confluent_kafka", "cimpl",
                "site-packages/pulsar/", "_pulsar", "site-packages/nats/")),
    ("emit", ("hexa_event/emitter.py", "hexa_event/envelope.py", "hexa_event/event.py",
              "hexa_event/ids.py", "uuid_utils")),
    ("wire/dispatch", ("hexa_event/wire.py", "hexa_event/dispatch.py", "hexa_event/retry.py",
                       "hexa_event/errors.py")),
    ("lanes/receiver", ("hexa_event/lanes.py", "hexa_event/receiver.py", "hexa_event/batching.py",
                        "hexa_event/threads.py")),
    ("codec", ("hexa_event/codecs.py", "msgspec")),
    ("context", ("hexa_event/context.py", "hexa_event/propagation.py",
                 "hexa_event/middleware.py", "hexa_event/telemetry.py")),
    ("asyncio", ("asyncio/", "_asyncio", "selectors.py", "contextvars")),
    ("benchmark", ("benchmarks/",)),
)  # fmt: skip
IDLE = ("method 'poll' of 'select.epoll' objects", "method 'select' of 'select.")

Func = tuple[str, int, str]


def layer_of(func: Func) -> str | None:
    """The layer of a Python function (by file); None for a C function (file ``~``) or
    generated code (``<string>``), whose time goes to their callers' layers."""
    filename, _, name = func
    if filename == "<string>":  # dataclass-generated __init__ and the like: the caller's
        return None
    if filename == "~":
        for layer, needles in LAYERS:
            if any(needle in name for needle in needles):
                return layer
        return None
    for layer, needles in LAYERS:
        if any(needle in filename for needle in needles):
            return layer
    return "other"


def describe(func: Func) -> str:
    filename, line, name = func
    if filename == "~":
        return name
    short = filename.split("site-packages/")[-1].split("/src/")[-1]
    return f"{short}:{line} {name}"


def breakdown(stats: pstats.Stats, count: int, top: int) -> None:
    raw: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
    by_layer: dict[str, float] = defaultdict(float)
    own: dict[Func, tuple[float, int, str]] = {}
    idle = 0.0
    for func, (_cc, calls, tottime, _cumtime, callers) in raw.items():
        if any(marker in func[2] for marker in IDLE):
            idle += tottime
            continue
        layer = layer_of(func)
        if layer is None:  # a C function: charge each caller's layer its share
            shares: dict[str, float] = defaultdict(float)
            for caller, (_c, _n, caller_tt, _ct) in callers.items():
                shares[layer_of(caller) or "other"] += caller_tt
            for name, seconds in shares.items():
                by_layer[name] += seconds
            charged = sum(shares.values())
            if tottime > charged:  # callers not recorded (e.g. called from C)
                by_layer["other"] += tottime - charged
            main = max(shares, key=shares.__getitem__) if shares else "other"
            own[func] = (tottime, calls, f"{main}*")
        else:
            by_layer[layer] += tottime
            own[func] = (tottime, calls, layer)
    busy = sum(by_layer.values())
    print(f"  event loop thread busy {busy:.2f} s, idle in select {idle:.2f} s (profiled)")
    print(f"  {'layer':<16} {'µs/event':>9} {'share':>6}")
    for layer, seconds in sorted(by_layer.items(), key=lambda kv: -kv[1]):
        print(f"  {layer:<16} {seconds / count * 1e6:>9.2f} {seconds / busy:>6.0%}")
    print(f"\n  top {top} functions by own time (* = C or generated, charged to its callers)")
    print(f"  {'µs/event':>9} {'calls/ev':>8} {'layer':<16} function")
    for func, (seconds, calls, layer) in sorted(own.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"  {seconds / count * 1e6:>9.2f} {calls / count:>8.2f} {layer:<16} {describe(func)}")


class GcClock:
    """Time spent in the garbage collector while installed, in total and per generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self.by_generation = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            spent = time.perf_counter() - self._began
            self.seconds += spent
            self.collections += 1
            self.by_generation[info["generation"]] += spent
            self.runs[info["generation"]] += 1

    def per_generation(self, count: int) -> str:
        return ", ".join(
            f"gen {n}: {runs} runs {seconds / count * 1e6:.2f} µs/event"
            for n, (runs, seconds) in enumerate(zip(self.runs, self.by_generation, strict=True))
        )

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


async def profile(title: str, count: int, run: Callable[[int], Awaitable[float]], top: int) -> None:
    print(f"\n== {title}, {count:,} events")
    for frozen in (False, True):
        # As a receiver runs in your process, then as ``hexa-event run`` runs it (collector
        # tuned once started: hexa_event.runner.collector).
        tuned = collector.tune() if frozen else None
        try:
            with GcClock() as clock:
                rate = await run(count)
        finally:
            collector.restore(tuned)
        print(
            f"  unprofiled{', collector tuned as the runner does' if frozen else ''}: "
            f"{rate:,.0f} events/s, "
            f"{1e6 / rate:.1f} µs per event; garbage collector "
            f"{clock.seconds / count * 1e6:.2f} µs/event ({clock.per_generation(count)})"
        )
    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.enable()
    await run(count)
    profiler.disable()
    wall = time.perf_counter() - began
    print(f"  profiled: {wall:.2f} s wall, {wall / count * 1e6:.1f} µs per event")
    breakdown(pstats.Stats(profiler), count, top)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default="memory,kafka")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    paths = args.paths.split(",")
    if "memory" in paths:
        import memory_end_to_end

        await profile(
            "memory driver end to end (emit -> handle -> ack)",
            args.count,
            memory_end_to_end.ours,
            args.top,
        )
    if "kafka" in paths:
        import kafka_consume

        await asyncio.to_thread(kafka_consume.fill, args.count)  # filling is not profiled
        for title, run in (
            ("Kafka consume + ack through a receiver", kafka_consume.ours),
            ("Kafka consume, driver alone (fetch, decode, ack, settle)", kafka_consume.driver_only),
        ):
            try:
                await profile(title, args.count, run, args.top)
            except Exception as exc:
                print(f"  failed: {type(exc).__name__}: {exc}")
    if "kafka-batch" in paths:
        import faststream_kafka
        import kafka_batch

        # One pre-filled topic per run (unprofiled twice, profiled): a new group reads each.
        topics = [await asyncio.to_thread(faststream_kafka.fill, args.count) for _ in range(3)]

        async def batched(count: int) -> float:
            return float((await kafka_batch.ours(topics.pop(), count))["rate"])

        await profile(
            f"Kafka batch handler, Batch(max_size={kafka_batch.MAX_SIZE})",
            args.count,
            batched,
            args.top,
        )
    for engine in ("pulsar", "stan"):
        if engine in paths:
            bench = __import__(f"{engine}_bench")
            for title, fill, run in bench.PROFILED:
                # Filled before, out of the profile: one topic per run (unprofiled twice, profiled).
                filled = [await fill(args.count) for _ in range(3)] if fill else []

                async def go(count: int, run: Any = run, filled: list[str] = filled) -> float:
                    return float(await (run(count, filled.pop()) if filled else run(count)))

                await profile(f"{engine}: {title}", args.count, go, args.top)


if __name__ == "__main__":
    asyncio.run(main())
