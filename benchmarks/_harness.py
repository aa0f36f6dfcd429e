"""Shared benchmark plumbing: timing, repeats, medians and the ratio line.

Every benchmark runs the raw reference and hexa-event in the same process and run, several
rounds alternating between them, and reports medians, so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import hexa_event as he
from hexa_event.runner import collector

P = ParamSpec("P")
T = TypeVar("T")
Run = Callable[[int], Awaitable[float]]
"""One side's run: given the event count, its rate (or time, for a unit "s")."""
Side = tuple[str, Run]
"""One side of a comparison: its name in the printed table and the JSON row, and its run."""


@dataclass
class Tick:
    """The benchmarks' event payload (about 80 bytes of JSON)."""

    n: int
    name: str
    total: int
    currency: str
    note: str


class Collections:
    """The garbage collector's time while it is in ``gc.callbacks`` (:attr:`seconds`)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began


def sealed(
    channel: str, count: int, payload: Callable[[int], object], ctx: he.Context | None = None
) -> list[he.driver.RawRecord]:
    """``count`` events sealed by our envelope (what a driver alone is given to publish, or
    a stand-in client hands out): event ``n`` carries ``payload(n)`` to ``channel`` under
    the key ``k{n % 64}``, in ``ctx`` (by default a context whose correlation id is
    "bench")."""
    envelope = he.envelope.Envelope()
    if ctx is None:
        ctx = he.Context(correlation_id="bench")
    return [envelope.seal(he.Event(channel, f"k{n % 64}", payload(n)), ctx) for n in range(count)]


def tuned(run: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``run`` with the collector tuned as ``hexa-event run`` tunes it once its receivers
    have started (``hexa_event.runner.collector``: heap frozen, young threshold raised), and
    restored after. Given to every side of a comparison, so that all run alike."""

    async def run_tuned(*args: P.args, **kwargs: P.kwargs) -> T:
        tuning = collector.tune()
        try:
            return await run(*args, **kwargs)
        finally:
            collector.restore(tuning)

    return run_tuned


def tuned_side(side: Side) -> Side:
    """``side`` under the same name, its run :func:`tuned`."""
    name, run = side
    return name, tuned(run)


@dataclass
class Result:
    name: str
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def summary(self) -> dict[str, object]:
        """Name, median (None when it never ran) and every round's figure."""
        return {
            "name": self.name,
            "median": self.median if self.rates else None,
            "rates": self.rates,
        }


def row(
    title: str,
    count: int,
    reference: Result,
    ours: Result,
    *,
    unit: str = "events/s",
    target: str | None = None,
    **extra: object,
) -> dict[str, object]:
    """One result object as ``run.py`` collects it (``--json``).

    ``ratio`` is always "how many times as fast as the reference": ours / reference for a
    rate, reference / ours for a time (``unit`` "s"); None when either side did not run.
    """
    ratio = None
    if reference.rates and ours.rates and min(reference.median, ours.median) > 0:
        ratio = reference.median / ours.median if unit == "s" else ours.median / reference.median
    return {
        "benchmark": title,
        "count": count,
        "unit": unit,
        "reference": reference.summary(),
        "ours": ours.summary(),
        "ratio": ratio,
        "target": target,
        **extra,
    }


def port_answers(url: str, default_port: int = 0, timeout: float = 2.0) -> bool:
    """Whether the host and port of ``url`` (``default_port`` when it names none) accept a
    connection within ``timeout`` seconds: is the service there at all."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout
        ):
            return True
    except OSError:
        return False


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


async def timed(count: int, body: Callable[[], Awaitable[None]]) -> float:
    """Run ``body`` once and return ``count`` / elapsed seconds."""
    began = time.perf_counter()
    await body()
    return count / (time.perf_counter() - began)


async def compare(
    title: str,
    count: int,
    reference: Side,
    ours: Side,
    rounds: int = 5,
    unit: str = "events/s",
    target: str | None = None,
) -> dict[str, object]:
    """Alternate reference and ours for ``rounds`` rounds; print medians and ratio."""
    ref = Result(reference[0])
    mine = Result(ours[0])
    for _ in range(rounds):
        ref.rates.append(await reference[1](count))
        mine.rates.append(await ours[1](count))
    ratio = mine.median / ref.median
    print(f"\n{title}  ({count} events x {rounds} rounds, {machine()})")
    for result in (ref, mine):
        spread = f"min {min(result.rates):,.0f} max {max(result.rates):,.0f}"
        print(f"  {result.name:<36} median {result.median:>12,.0f} {unit}  ({spread})")
    print(f"  ratio hexa-event / reference: {ratio:.2f}")
    return row(title, count, ref, mine, unit=unit, target=target)


@dataclass(frozen=True)
class Comparison:
    """One row of a benchmark's table: ``title``, the raw reference and ours, and the ratio
    aimed at (``target``, if any)."""

    title: str
    reference: Side
    ours: Side
    target: str | None = None


async def compare_all(args: argparse.Namespace, comparisons: Iterable[Comparison]) -> None:
    """:func:`compare` each of ``comparisons`` in turn (``--count`` events, ``--rounds``
    rounds), then write their rows to ``--json`` (a list, in that order)."""
    results = []
    for comparison in comparisons:
        results.append(
            await compare(
                comparison.title,
                args.count,
                comparison.reference,
                comparison.ours,
                rounds=args.rounds,
                target=comparison.target,
            )
        )
    finish(results, args.json)


async def in_batches(
    count: int, send: Callable[[int, int], Awaitable[None]], batch: int, in_flight: int
) -> None:
    """``send(start, stop)`` for every ``batch`` of ``range(count)``, at most ``in_flight``
    of them at once (all started together, as ``asyncio.gather`` starts them)."""
    semaphore = asyncio.Semaphore(in_flight)

    async def one(start: int) -> None:
        async with semaphore:
            await send(start, min(start + batch, count))

    await asyncio.gather(*(one(start) for start in range(0, count, batch)))


def cli_parser(description: str, default_count: int, rounds: int = 5) -> argparse.ArgumentParser:
    """The options every benchmark takes (``--count``, ``--rounds``, ``--json``: ``run.py``
    passes the last two), for a benchmark to add its own to."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=default_count)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", help="also write the results to this file")
    return parser


def cli(description: str, default_count: int) -> argparse.Namespace:
    return cli_parser(description, default_count).parse_args()


def callgrind_total(out_file: str) -> int:
    """The instructions a ``valgrind --tool=callgrind`` output file counted (its last
    summary or totals line); the file is removed."""
    with open(out_file) as fh:
        totals = [line for line in fh if line.startswith(("summary:", "totals:"))]
    os.remove(out_file)
    return int(totals[-1].split()[1])


def tree_cli(description: str, paths: Sequence[str]) -> argparse.ArgumentParser:
    """The command line of the by-hand CPU scripts that compare checkouts: ``--tree`` (a
    checkout's ``src``, repeatable), ``--paths``, ``--count``, ``--rounds``, ``--callgrind``
    and the hidden ``--child`` (the path a child process measures)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--tree", action="append", default=[], help="a checkout's src folder")
    parser.add_argument("--paths", default=",".join(paths))
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--callgrind", action="store_true", help="instructions per event under callgrind"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def run_child(
    script: str, tree: str, args: Sequence[str], valgrind: str | None = None, attempts: int = 1
) -> dict[str, Any]:
    """Run ``script args`` in a fresh process whose imports come from ``tree`` (a checkout's
    ``src``) and ``script``'s folder; its result is the JSON of its last output line. Under
    callgrind when ``valgrind`` names the output file (its count added as ``instructions``);
    a failed run is tried again up to ``attempts`` runs in all."""
    here = os.path.dirname(os.path.abspath(script))
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{here}")
    command = [sys.executable, script, *args]
    if valgrind:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind}", *command]
    for attempt in range(attempts):
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        if out.returncode == 0:
            break
        print(f"a run failed (attempt {attempt + 1}): {out.stderr[-500:]}", file=sys.stderr)
    else:
        raise SystemExit(f"{' '.join(command)} failed {attempts} time(s)")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    if valgrind:
        result["instructions"] = callgrind_total(valgrind)
    return result


async def receiver_round(driver: Any, channel: str, count: int, payload: type) -> float:
    """Event-loop CPU seconds a ``Receiver`` over ``driver`` (concurrency 256) takes to hand
    ``count`` events of ``channel`` to a handler that only counts: from the first handled
    event to the last (start and close left out)."""
    receiver = he.Receiver(driver, name="bench", concurrency=256, lag_interval=3600)
    done = asyncio.Event()
    seen = 0
    began = 0.0

    @receiver.subscribe(channel, action="bench", payload=payload)
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        nonlocal seen, began
        if seen == 0:
            began = time.thread_time()
        seen += 1
        if seen == count:
            done.set()

    await receiver.start()
    await asyncio.wait_for(done.wait(), 600)
    took = time.thread_time() - began
    await receiver.close()
    return took


async def _instrument(state: str) -> None:
    """Switch valgrind's instrumentation of this process ``on`` or ``off``."""
    command = ["callgrind_control", "-i", state, str(os.getpid())]
    await asyncio.to_thread(subprocess.run, command, check=True, capture_output=True)


async def receiver_cpu(
    title: str,
    description: str,
    items: Callable[[int], list[Any]],
    driver: Callable[[list[Any]], Any],
    channel: str,
    payload: type,
    *,
    callgrind_warm_up: int = 0,
) -> None:
    """The command line of the no-broker receiver scripts: ``--rounds`` rounds of
    :func:`receiver_round` over ``driver(items(--count))``, the median CPU per event
    printed after ``title``; with ``--callgrind``, one round with valgrind's
    instrumentation on only for it (after ``callgrind_warm_up`` events uncounted)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--callgrind", action="store_true", help="one round, nothing printed")
    args = parser.parse_args()
    records = items(args.count)

    async def one(chosen: list[Any]) -> float:
        return await receiver_round(driver(chosen), channel, len(chosen), payload)

    if args.callgrind:
        if callgrind_warm_up:
            await one(records[:callgrind_warm_up])  # imports, caches
        await _instrument("on")
        await one(records)
        await _instrument("off")
        return
    await one(records[: min(2000, args.count)])  # warm up (imports, caches)
    times = [await one(records) / args.count * 1e6 for _ in range(args.rounds)]
    print(
        f"{title}: {statistics.median(times):.2f} µs CPU per event (median of "
        f"{args.rounds}; {min(times):.2f}-{max(times):.2f})"
    )


def finish(result: object, path: str | None) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)


def thread_times() -> dict[int, tuple[str, float, int, int, float]]:
    """Per thread id: name (from the kernel), s on a core, voluntary and involuntary
    context switches, s waited runnable (``schedstat``)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/self/task/{tid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
            with open(f"/proc/self/task/{tid}/schedstat") as fh:
                ran, waited, _ = (int(x) for x in fh.read().split())
        except FileNotFoundError:  # ended meanwhile
            continue
        out[int(tid)] = (
            stat[stat.index("(") + 1 : stat.rindex(")")],
            ran / 1e9,
            int(status["voluntary_ctxt_switches"]),
            int(status["nonvoluntary_ctxt_switches"]),
            waited / 1e9,
        )
    return out
