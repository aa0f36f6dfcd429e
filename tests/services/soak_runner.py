"""Soak: one process emitting and handling a steady load for a long time, watching that
nothing it holds keeps growing.

About ``rate`` events per second (default 1,000) are emitted, split evenly over the memory,
SQLite and Kafka drivers, and handled by one receiver per driver in the same process. One
event in 20 fails once (a retry copy runs it again), one in 100 always fails (it runs
``1 + max_retries`` times, then goes to the dead-letter channel). Every ``sample_every``
seconds the process's RSS, open file descriptors, asyncio tasks and OS threads, and the
backlog (emitted minus handled), are sampled. After a warm-up, a series "keeps growing" when
its least-squares trend over the rest of the run is above its tolerance and its second half
sits above its first half; then the soak fails. A PNG plot shows all series over time.

``make soak`` runs 20 minutes (``python tests/services/soak_runner.py --help``); the test
``tests/services/test_soak.py`` (marker ``soak``) runs 2 minutes in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hexa_event
from hexa_event.context import Context
from hexa_event.errors import HexaEventError
from hexa_event.event import Event, Message
from hexa_event.retry import RetryPolicy

log = logging.getLogger("soak")

TOLERANCE = {"rss_mib": 40.0, "fds": 10.0, "tasks": 60.0, "threads": 6.0, "backlog": 3000.0}
"""How much a series may rise over the measured window before it counts as growing."""

FAIL_ONCE_EVERY = 20
FAIL_ALWAYS_EVERY = 100
RETRY = RetryPolicy(max_retries=2, initial_delay=0.2, coefficient=2.0)


class SoakError(AssertionError):
    """A sampled series kept growing, or the load was not handled."""


@dataclass
class Sample:
    t: float
    rss_mib: float
    fds: int
    tasks: int
    threads: int
    backlog: int
    emitted: int
    handled: int


@dataclass
class Report:
    duration: float
    warmup: float
    rate_target: float
    emitted: int = 0
    handled: int = 0
    retried: int = 0
    dead: int = 0
    emit_errors: int = 0
    samples: list[Sample] = field(default_factory=list)
    growth: dict[str, float] = field(default_factory=dict)
    """Trend over the measured window (after warm-up), per series."""
    growing: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.emitted / self.duration if self.duration else 0.0

    def summary(self) -> str:
        last = self.samples[-1] if self.samples else None
        trend = ", ".join(f"{k} {v:+.1f}" for k, v in self.growth.items())
        return (
            f"soak: {self.duration:.0f}s, {self.emitted} emitted ({self.rate:.0f}/s, target "
            f"{self.rate_target:.0f}/s), {self.handled} handled runs, {self.retried} retries, "
            f"{self.dead} dead-lettered, {self.emit_errors} emit errors; "
            + (
                f"end: rss {last.rss_mib:.0f} MiB, fds {last.fds}, tasks {last.tasks}, "
                f"threads {last.threads}, backlog {last.backlog}; "
                if last
                else ""
            )
            + f"trend after warm-up: {trend}"
            + (f"; GROWING: {', '.join(self.growing)}" if self.growing else "")
        )


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _os_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return threading.active_count()


def _trend(points: list[tuple[float, float]]) -> float:
    """Least-squares slope times the window's length: how much the series rose."""
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return slope * (xs[-1] - xs[0])


async def _wait_until(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, no event
        await asyncio.sleep(0.2)


def judge(report: Report) -> None:
    """Fill ``growth`` and ``growing`` from the samples taken after warm-up."""
    measured = [s for s in report.samples if s.t >= report.warmup]
    for name, tolerance in TOLERANCE.items():
        points = [(s.t, float(getattr(s, name))) for s in measured]
        growth = _trend(points)
        report.growth[name] = growth
        if len(points) < 4:
            continue
        half = len(points) // 2
        first = statistics.median(p[1] for p in points[:half])
        second = statistics.median(p[1] for p in points[half:])
        if growth > tolerance and second - first > tolerance / 2:
            report.growing.append(name)


def plot(report: Report, path: Path) -> None:
    """A PNG of every sampled series over time (matplotlib, from the test extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["rss_mib", "fds", "tasks", "threads", "backlog"]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 11), sharex=True)
    ts = [s.t for s in report.samples]
    for ax, name in zip(axes, names, strict=True):
        ax.plot(ts, [getattr(s, name) for s in report.samples], marker=".")
        ax.axvline(report.warmup, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("seconds (dashed: end of warm-up)")
    fig.suptitle(
        f"hexa-event soak: {report.rate:.0f} events/s over memory, SQLite, Kafka; "
        f"{report.duration / 60:.0f} min"
        + (" - GROWING: " + ", ".join(report.growing) if report.growing else "")
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


class Engine:
    """One driver under load: its emitter, its receiver and what its handler saw.

    With ``rotate_every`` (the memory driver) a fresh connection to a new in-process broker
    takes over every so many seconds, and the old one is drained, closed and forgotten: the
    memory driver keeps every event for as long as its broker lives (about 750 bytes each),
    by design, so without rotation its log would dominate the RSS series.
    """

    def __init__(self, name: str, url: str, tag: str, rotate_every: float | None = None) -> None:
        self.name = name
        self.url = url
        self.tag = tag
        self.rotate_every = rotate_every
        self.generation = 0
        self.channel = f"soak-{name}-{tag}"
        self.action = f"soak-{name}-act-{tag}"
        self.handled = 0
        self.retried = 0
        self.dead = 0
        self.emitted = 0
        self.emitted_in: Counter[int] = Counter()
        self.firsts: Counter[int] = Counter()
        """First runs per generation (a rotation waits for the old one's to catch up)."""
        self.seq = 0
        self._open()

    def _open(self) -> None:
        url = self.url
        if self.rotate_every is not None:
            self.generation += 1
            url = f"{self.url}soak-{self.tag}-{self.generation}"
        self.current_url = url
        self.conn = hexa_event.connect(url)
        self.receiver = self.conn.receiver(f"soak-{self.name}", drain_timeout=10)
        generation = self.generation

        async def handle(ctx: Context, msg: Message[Any]) -> None:
            if msg.attempt == 1:
                self.firsts[generation] += 1
            await self.handle(ctx, msg)

        self.receiver.subscribe(self.channel, action=self.action, retry=RETRY)(handle)
        self.emitter = self.conn.emitter()

    async def start(self) -> None:
        await self.conn.provision([self.channel])
        await self.receiver.start()

    async def close(self) -> None:
        await self.receiver.close()
        await self.conn.close()

    @property
    def backlog(self) -> int:
        return self.emitted - (self.handled - self.retried)

    async def rotate(self) -> None:
        """Move to a fresh in-process broker; drain, close and forget the old one."""
        from hexa_event.drivers.memory.broker import MemoryBroker

        old_conn, old_receiver, old_url = self.conn, self.receiver, self.current_url
        self._open()
        await self.start()
        old = self.generation - 1
        await _wait_until(lambda: self.firsts[old] >= self.emitted_in[old], 30)
        await asyncio.sleep(1.5)  # retry copies of the last events (0.2 s + 0.4 s back-off)
        await old_receiver.close()
        await old_conn.close()
        MemoryBroker.forget(old_url.split("://", 1)[1])

    async def handle(self, ctx: Context, msg: Message[Any]) -> None:
        self.handled += 1
        mode = msg.payload["mode"]
        if msg.attempt > 1:
            self.retried += 1
        if mode == "always":
            if msg.attempt == 1 + RETRY.max_retries:
                self.dead += 1
            raise RuntimeError("soak: this event always fails")
        if mode == "once" and msg.attempt == 1:
            raise RuntimeError("soak: this event fails once")

    def batch(self, n: int) -> list[Event[Any]]:
        events = []
        for _ in range(n):
            self.seq += 1
            i = self.seq
            mode = (
                "always"
                if i % FAIL_ALWAYS_EVERY == 0
                else ("once" if i % FAIL_ONCE_EVERY == 0 else "ok")
            )
            events.append(Event(self.channel, f"k{i % 64}", {"i": i, "mode": mode}))
        return events


async def run(
    duration: float,
    rate: float,
    sample_every: float,
    warmup: float,
    kafka: str,
    workdir: Path,
    engines_wanted: tuple[str, ...] = ("memory", "sqlite", "kafka"),
) -> Report:
    """Emit and handle for ``duration`` seconds; the report has samples and verdicts."""
    tag = uuid.uuid4().hex[:8]
    urls = {
        "memory": "memory://",
        "sqlite": f"sqlite:///{workdir / f'soak-{tag}.db'}",
        "kafka": f"kafka://{kafka}",
    }
    engines = [
        Engine(name, urls[name], tag, rotate_every=20.0 if name == "memory" else None)
        for name in engines_wanted
    ]
    report = Report(duration=duration, warmup=warmup, rate_target=rate)
    tick = 0.1
    per_tick = rate * tick / len(engines)
    began = time.monotonic()

    def handled() -> int:
        return sum(e.handled - e.retried for e in engines)

    async def emit(engine: Engine) -> None:
        owed = 0.0
        next_at = time.monotonic()
        rotate_at = engine.rotate_every
        while time.monotonic() - began < duration:
            if rotate_at is not None and time.monotonic() - began >= rotate_at:
                rotation = asyncio.create_task(engine.rotate())
                rotations.add(rotation)
                rotation.add_done_callback(rotations.discard)
                rotate_at += engine.rotate_every or 0.0
            owed += per_tick
            n = int(owed)
            owed -= n
            if n:
                try:
                    generation, emitter = engine.generation, engine.emitter
                    await emitter.emit_many(engine.batch(n))
                    engine.emitted += n
                    engine.emitted_in[generation] += n
                    report.emitted += n
                except HexaEventError as exc:
                    report.emit_errors += 1
                    log.warning("soak: %s emit failed: %s", engine.name, exc)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def sample() -> None:
        while True:
            report.samples.append(
                Sample(
                    t=round(time.monotonic() - began, 1),
                    rss_mib=round(_rss_mib(), 1),
                    fds=len(os.listdir("/proc/self/fd")),
                    tasks=len(asyncio.all_tasks()),
                    threads=_os_threads(),
                    backlog=report.emitted - handled(),
                    emitted=report.emitted,
                    handled=handled(),
                )
            )
            log.info("soak sample %s", report.samples[-1])
            await asyncio.sleep(sample_every)

    rotations: set[asyncio.Task[None]] = set()
    for e in engines:
        await e.start()
    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(emit(e) for e in engines))
        await asyncio.gather(*rotations)
        await _wait_until(lambda: handled() >= report.emitted, 60)
    finally:
        sampler.cancel()
        for e in engines:
            await e.close()
    report.duration = time.monotonic() - began
    report.handled = handled()
    report.retried = sum(e.retried for e in engines)
    report.dead = sum(e.dead for e in engines)
    judge(report)
    return report


def check(report: Report) -> None:
    """Raise SoakError when a series grew or the load was not handled."""
    problems = []
    if report.growing:
        problems.append(f"kept growing after warm-up: {', '.join(report.growing)}")
    if report.handled < report.emitted:
        problems.append(f"only {report.handled} of {report.emitted} events handled")
    if report.rate < 0.8 * report.rate_target:
        problems.append(f"emitted {report.rate:.0f}/s, below 80% of {report.rate_target:.0f}/s")
    if not report.retried or not report.dead:
        problems.append("retries and dead letters did not run")
    if problems:
        raise SoakError("; ".join(problems) + "\n" + report.summary())


def quiet_handler_failures() -> None:
    """The soak's handlers fail on purpose thousands of times: do not log each failure."""
    logging.getLogger("hexa_event.dispatch").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=1000.0, help="events per second, all drivers")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    p.add_argument("--warmup", type=float, default=None, help="seconds (default: 1/4 of run)")
    p.add_argument("--kafka", default=os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--engines", default="memory,sqlite,kafka", help="comma-separated")
    p.add_argument("--plot", type=Path, default=Path("soak.png"))
    p.add_argument("--json", type=Path, default=None, help="write the samples here too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    quiet_handler_failures()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else duration / 4
    with tempfile.TemporaryDirectory(prefix="hexa-soak-") as tmp:
        report = asyncio.run(
            run(
                duration,
                args.rate,
                args.sample_every,
                warmup,
                args.kafka,
                Path(tmp),
                tuple(args.engines.split(",")),
            )
        )
    plot(report, args.plot)
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in report.samples], indent=1))
    print(report.summary())
    print(f"plot: {args.plot.resolve()}")
    try:
        check(report)
    except SoakError as exc:
        print(f"SOAK FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
