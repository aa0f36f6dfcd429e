"""Soak: one process emitting and handling a steady load for a long time, watching that
nothing it holds keeps growing.

About ``rate`` events per second are emitted, split evenly over the chosen engines
(``--engines``: memory, sqlite, kafka, jetstream), and handled by one receiver per engine in
the same process. One event in 20 fails once (a retry copy runs it again), one in 100 always
fails (it runs ``1 + max_retries`` times, then goes to the dead-letter channel). With
``--outbox-every N`` every N-th emit batch of a persistent engine is written to an SQLite
outbox instead, and an :class:`~hexa_event.outbox.OutboxRelay` in the process publishes it.
The SQLite engine's log is pruned every minute (what a service does). With ``--otel`` every
connection is instrumented (:class:`~hexa_event.telemetry.Telemetry`) with the real SDK: a
TracerProvider with a BatchSpanProcessor exporting to an exporter that counts and drops
spans, and a MeterProvider with a PeriodicExportingMetricReader (every 5 s) exporting to an
exporter that counts and drops data points, so the SDK's own memory is measured too.

Every ``sample_every`` seconds the process's RSS, open file descriptors, asyncio tasks and OS
threads, and the backlog (emitted minus handled), are sampled. The pass rule is
:mod:`soak_rule` (docs/soak.md); a PNG plot shows every series over time and a JSON file
the samples, the rule, the checks and the totals.

``make soak`` runs it (``python tests/services/soak_runner.py --help``) on the soak's own
brokers, ``kafka-soak`` and ``nats-soak`` (``scripts/services up kafka-soak nats-soak``),
which nothing else uses or restarts; their pids before and after the run go in the report,
so a restart during it shows. The test ``tests/services/test_soak.py`` (marker ``soak``)
runs 2 minutes on the shared ``kafka`` and ``nats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soak_rule import SOAK_60, Check, Rule, judge_samples

import hexa_event
from hexa_event.connect import Connection
from hexa_event.context import Context
from hexa_event.errors import HexaEventError
from hexa_event.event import Event, Message
from hexa_event.retry import RetryPolicy

log = logging.getLogger("soak")

FAIL_ONCE_EVERY = 20
FAIL_ALWAYS_EVERY = 100
RETRY = RetryPolicy(max_retries=2, initial_delay=0.2, coefficient=2.0)
ENGINES = ("memory", "sqlite", "kafka", "jetstream")
PRUNE_EVERY = 60.0
PRUNE_OLDER_THAN = 120.0


class SoakError(AssertionError):
    """A check of the rule failed."""


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
    rule: Rule
    rate_target: float
    engines: dict[str, dict[str, int]] = field(default_factory=dict)
    emitted: int = 0
    emit_calls: int = 0
    handled: int = 0
    retried: int = 0
    dead: int = 0
    emit_errors: int = 0
    otel: dict[str, int] | None = None
    brokers: dict[str, Any] = field(default_factory=dict)
    """Endpoints, and the broker processes' pids before and after the run (``main``)."""
    samples: list[Sample] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.emitted / self.duration if self.duration else 0.0

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        last = self.samples[-1] if self.samples else None
        lines = [
            f"soak: {self.duration:.0f}s, {self.emitted} emitted ({self.rate:.0f}/s, target "
            f"{self.rate_target:.0f}/s), {self.handled} handled, {self.retried} retries, "
            f"{self.dead} dead-lettered, {self.emit_errors} emit errors"
        ]
        lines += [f"  {name}: {counts}" for name, counts in self.engines.items()]
        if self.otel is not None:
            lines.append(f"  otel: {self.otel}")
        if last:
            lines.append(
                f"  end: rss {last.rss_mib:.0f} MiB, fds {last.fds}, tasks {last.tasks}, "
                f"threads {last.threads}, backlog {last.backlog}"
            )
        lines += [f"  {c}" for c in self.checks]
        lines.append("PASS" if self.checks and not self.failed else "FAIL")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 1),
            "rate_target": self.rate_target,
            "rate": round(self.rate, 1),
            "rule": self.rule.as_dict(),
            "checks": [asdict(c) for c in self.checks],
            "passed": bool(self.checks) and not self.failed,
            "emitted": self.emitted,
            "handled": self.handled,
            "retried": self.retried,
            "dead": self.dead,
            "emit_errors": self.emit_errors,
            "engines": self.engines,
            "otel": self.otel,
            "brokers": self.brokers,
            "samples": [asdict(s) for s in self.samples],
        }


def _rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _os_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return threading.active_count()


async def _wait_until(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, no event
        await asyncio.sleep(0.2)


async def _delete_stream(url: str) -> None:
    """Delete the run's own JetStream stream (``?stream=`` in ``url``) from the shared server."""
    from urllib.parse import parse_qs, urlsplit

    import nats

    parts = urlsplit(url)
    stream = parse_qs(parts.query)["stream"][0]
    nc = await nats.connect(f"{parts.scheme}://{parts.netloc}")
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


class HeapDiff:
    """tracemalloc snapshots at the end of the warm-up and at the end of the load, and the
    allocation sites that grew most between them (``--tracemalloc FILE``; slow: use a low
    rate)."""

    def __init__(self, path: Path, frames: int = 8) -> None:
        self.path = path
        self.first: tracemalloc.Snapshot | None = None
        tracemalloc.start(frames)

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot:
        return tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )

    def mark(self) -> None:
        self.first = self._snapshot()

    def write(self, top: int = 25) -> None:
        if self.first is None:
            return
        stats = self._snapshot().compare_to(self.first, "traceback")
        grew = sum(stat.size_diff for stat in stats)
        stats.sort(key=lambda stat: stat.size_diff, reverse=True)
        lines = [f"traced heap after warm-up to the end: {grew / 2**20:+.2f} MiB"]
        for stat in stats[:top]:
            lines.append(f"{stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
            lines += [f"    {line}" for line in stat.traceback.format()]
        self.path.write_text("\n".join(lines) + "\n")
        tracemalloc.stop()


class OtelSink:
    """The OpenTelemetry SDK wired as a service would wire it, exporting to counters."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter,
            MetricExportResult,
            MetricsData,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from hexa_event.telemetry import Telemetry

        sink = self
        self.spans = 0
        self.points = 0
        self.exports = 0

        class Spans(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                sink.spans += len(spans)
                return SpanExportResult.SUCCESS

        class Points(MetricExporter):
            def export(
                self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any
            ) -> MetricExportResult:
                sink.exports += 1
                for rm in metrics_data.resource_metrics:
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            sink.points += len(list(metric.data.data_points))
                return MetricExportResult.SUCCESS

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
                return None

        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(Spans()))
        reader = PeriodicExportingMetricReader(Points(), export_interval_millis=5000)
        self.meter_provider = MeterProvider(metric_readers=[reader])
        self.telemetry = Telemetry(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def wrap(self, conn: Connection) -> Connection:
        return self.telemetry.instrument(conn)

    def shutdown(self) -> dict[str, int]:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        return {
            "spans_exported": self.spans,
            "metric_points_exported": self.points,
            "metric_exports": self.exports,
        }


class Outboxed:
    """An SQLite outbox in front of one engine, and the relay publishing it there."""

    def __init__(self, path: Path, conn: Connection, otel: OtelSink | None) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        from hexa_event.outbox import Outbox, OutboxRelay

        self.db = create_async_engine(f"sqlite+aiosqlite:///{path}")
        self.outbox = Outbox()
        driver = otel.telemetry.relay_driver(conn) if otel else conn
        self.relay = OutboxRelay(self.db, driver, keep_sent=False, poll_interval=0.2)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from hexa_event.outbox import migrate_async

        await migrate_async(self.db)
        self.task = asyncio.create_task(self.relay.run())

    async def write(self, events: list[Event[Any]]) -> None:
        async with self.db.begin() as db:
            await self.outbox.emit_many_async(db, events)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.relay.drain(30)
        self.relay.stop()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 30)
        await self.relay.close()
        await self.db.dispose()


class Engine:
    """One driver under load: its emitter, its receiver and what its handler saw.

    With ``rotate_every`` (the memory driver) a fresh connection to a new in-process broker
    takes over every so many seconds, and the old one is drained, closed and forgotten: the
    memory driver keeps every event for as long as its broker lives (about 750 bytes each),
    by design, so without rotation its log would dominate the RSS series.
    """

    def __init__(
        self,
        name: str,
        url: str,
        tag: str,
        *,
        rotate_every: float | None = None,
        otel: OtelSink | None = None,
        outbox: Path | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.tag = tag
        self.rotate_every = rotate_every
        self.otel = otel
        self.generation = 0
        self.channel = f"soak-{name}-{tag}"
        self.action = f"soak-{name}-act-{tag}"
        self.handled = 0
        self.retried = 0
        self.dead = 0
        self.emitted = 0
        self.outboxed = 0
        self.emitted_in: Counter[int] = Counter()
        self.firsts: Counter[int] = Counter()
        """First runs per generation (a rotation waits for the old one's to catch up)."""
        self.seq = 0
        self._open()
        self.outbox = Outboxed(outbox, self.conn, otel) if outbox else None

    def _open(self) -> None:
        url = self.url
        if self.rotate_every is not None:
            self.generation += 1
            url = f"{self.url}soak-{self.tag}-{self.generation}"
        self.current_url = url
        conn = hexa_event.connect(url)
        self.conn = self.otel.wrap(conn) if self.otel else conn
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
        if self.outbox:
            await self.outbox.start()

    async def close(self) -> None:
        if self.outbox:
            await self.outbox.close()
        await self.receiver.close()
        await self.conn.close()
        if self.name == "jetstream":
            await _delete_stream(self.url)

    def counts(self) -> dict[str, int]:
        return {
            "emitted": self.emitted,
            "via_outbox": self.outboxed,
            "handled": self.handled - self.retried,
            "handler_runs": self.handled,
            "retried": self.retried,
            "dead": self.dead,
        }

    async def prune(self) -> None:
        """Delete settled log rows older than two minutes (the SQL driver only)."""
        prune = getattr(self.conn.driver, "prune", None)
        if prune is not None:
            await prune(PRUNE_OLDER_THAN)

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


def engine_urls(tag: str, workdir: Path, kafka: str, nats: str) -> dict[str, str]:
    """Each engine's URL; the JetStream stream and subjects are the run's own."""
    stream = f"SOAK_{tag.upper()}"
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{workdir / f'soak-{tag}.db'}",
        "kafka": f"kafka://{kafka}",
        "jetstream": f"{nats}?stream={stream}&subject_prefix=soak{tag}"
        "&max_age=600&duplicate_window=120",
    }


async def run(
    duration: float,
    rate: float,
    sample_every: float,
    rule: Rule,
    kafka: str,
    workdir: Path,
    engines_wanted: tuple[str, ...] = ("memory", "sqlite", "kafka"),
    *,
    nats: str = "nats://127.0.0.1:4222",
    otel: bool = False,
    outbox_every: int = 0,
    heap: HeapDiff | None = None,
) -> Report:
    """Emit and handle for ``duration`` seconds; the report has samples and checks."""
    unknown = set(engines_wanted) - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}: choose from {', '.join(ENGINES)}")
    tag = uuid.uuid4().hex[:8]
    urls = engine_urls(tag, workdir, kafka, nats)
    sink = OtelSink() if otel else None
    engines = [
        Engine(
            name,
            urls[name],
            tag,
            rotate_every=20.0 if name == "memory" else None,
            otel=sink,
            outbox=workdir / f"outbox-{name}-{tag}.db"
            if outbox_every and name != "memory"
            else None,
        )
        for name in engines_wanted
    ]
    report = Report(duration=duration, rule=rule, rate_target=rate)
    tick = 0.1
    per_tick = rate * tick / len(engines)
    began = time.monotonic()

    def handled() -> int:
        return sum(e.handled - e.retried for e in engines)

    async def emit(engine: Engine) -> None:
        owed = 0.0
        ticks = 0
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
                ticks += 1
                try:
                    generation, emitter = engine.generation, engine.emitter
                    report.emit_calls += 1
                    if engine.outbox and ticks % outbox_every == 0:
                        await engine.outbox.write(engine.batch(n))
                        engine.outboxed += n
                    else:
                        await emitter.emit_many(engine.batch(n))
                    engine.emitted += n
                    engine.emitted_in[generation] += n
                    report.emitted += n
                except HexaEventError as exc:
                    report.emit_errors += 1
                    log.warning("soak: %s emit failed: %s", engine.name, exc)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def prune() -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            for e in engines:
                try:
                    await e.prune()
                except HexaEventError as exc:
                    log.warning("soak: %s prune failed: %s", e.name, exc)

    async def sample() -> None:
        while True:
            if heap and heap.first is None and time.monotonic() - began >= rule.warmup:
                heap.mark()
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
    pruner = asyncio.create_task(prune())
    try:
        await asyncio.gather(*(emit(e) for e in engines))
        await asyncio.gather(*rotations)
        await _wait_until(lambda: handled() >= report.emitted, 120)
        await asyncio.sleep(2)  # the last dead letters (retries 0.2 s + 0.4 s apart)
        if heap:
            heap.write()
    finally:
        sampler.cancel()
        pruner.cancel()
        for e in engines:
            await e.close()
        if sink:
            report.otel = sink.shutdown()
    report.duration = time.monotonic() - began
    report.handled = handled()
    report.retried = sum(e.retried for e in engines)
    report.dead = sum(e.dead for e in engines)
    report.engines = {e.name: e.counts() for e in engines}
    report.checks = judge(report, outbox_every > 0)
    return report


def judge(report: Report, outbox: bool) -> list[Check]:
    """Every check of the report's rule (:mod:`soak_rule`)."""
    rule = report.rule
    checks = judge_samples(rule, report.samples, report.rate_target)
    checks.append(
        Check(
            "events not handled at the end",
            report.emitted - report.handled,
            0,
            report.handled >= report.emitted,
        )
    )
    share = report.rate / report.rate_target if report.rate_target else 0.0
    checks.append(
        Check(
            "emitted share of the target rate",
            round(share, 3),
            rule.min_rate_share,
            share >= rule.min_rate_share,
        )
    )
    errors = report.emit_errors / report.emit_calls if report.emit_calls else 1.0
    checks.append(
        Check(
            "failed emit calls share",
            round(errors, 5),
            rule.max_emit_error_share,
            errors <= rule.max_emit_error_share,
        )
    )
    for name, counts in report.engines.items():
        ran = min(counts["retried"], counts["dead"])
        checks.append(Check(f"{name}: retries and dead letters ran", ran, 1, ran >= 1))
        if outbox and name != "memory":
            checks.append(
                Check(
                    f"{name}: events relayed from the outbox",
                    counts["via_outbox"],
                    1,
                    counts["via_outbox"] >= 1,
                )
            )
    return checks


def check(report: Report) -> None:
    """Raise SoakError when a check of the rule failed."""
    if not report.checks or report.failed:
        raise SoakError(report.summary())


def plot(report: Report, path: Path) -> None:
    """A PNG of every sampled series over time (matplotlib, from the test extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["rss_mib", "fds", "tasks", "threads", "backlog"]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 9), sharex=True)
    ts = [s.t / 60 for s in report.samples]
    for ax, name in zip(axes, names, strict=True):
        ax.plot(ts, [getattr(s, name) for s in report.samples], linewidth=1)
        ax.axvline(report.rule.warmup / 60, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("minutes (dashed: end of warm-up)")
    engines = ", ".join(report.engines)
    otel = ", OpenTelemetry on" if report.otel is not None else ""
    verdict = "PASS" if report.checks and not report.failed else "FAIL"
    fig.suptitle(
        f"hexa-event soak: {report.rate:.0f} events/s over {engines}{otel}; "
        f"{report.duration / 60:.0f} min; {verdict}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)


BROKERS = {"dedicated": ("kafka-soak", "nats-soak"), "shared": ("kafka", "nats")}
"""The services ``--brokers`` names: the soak's own (``make soak``), or the shared ones."""


def broker_pids(names: Sequence[str]) -> dict[str, int | None]:
    """The running pid of each named service (None: not running under the harness)."""
    from hexa_event_services import get_service

    return {name: get_service(name).pid() for name in names}


def broker_endpoints(which: str, kafka: str | None, nats: str | None) -> tuple[str, str]:
    """The Kafka bootstrap and NATS URL of ``--brokers which`` (``BROKERS``), unless given."""
    from hexa_event_services import get_service

    kafka_name, nats_name = BROKERS[which]
    return kafka or get_service(kafka_name).url, nats or get_service(nats_name).url


def quiet_handler_failures() -> None:
    """The soak's handlers fail on purpose thousands of times: do not log each failure."""
    logging.getLogger("hexa_event.dispatch").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=600.0, help="events per second, all engines")
    p.add_argument("--sample-every", type=float, default=15.0, help="seconds")
    p.add_argument("--warmup", type=float, default=None, help="seconds (default: the rule's, 1200)")
    p.add_argument(
        "--brokers",
        choices=sorted(BROKERS),
        default="dedicated",
        help="dedicated: the soak's own kafka-soak and nats-soak (HEXA_KAFKA_SOAK_BOOTSTRAP,\n"
        "HEXA_NATS_SOAK_URL; scripts/services up kafka-soak nats-soak); shared: kafka and\n"
        "nats (HEXA_KAFKA_BOOTSTRAP, HEXA_NATS_URL)",
    )
    p.add_argument("--kafka", default=None, help="Kafka bootstrap (default: from --brokers)")
    p.add_argument("--nats", default=None, help="NATS URL (default: from --brokers)")
    p.add_argument(
        "--engines", default="sqlite,kafka,jetstream", help=f"comma-separated: {','.join(ENGINES)}"
    )
    p.add_argument("--otel", action="store_true", help="OpenTelemetry SDK tracing and metrics")
    p.add_argument(
        "--outbox-every", type=int, default=0, help="every N-th emit batch through an outbox"
    )
    p.add_argument(
        "--tracemalloc",
        type=Path,
        default=None,
        help="write the allocation sites that grew after warm-up here (slow)",
    )
    p.add_argument("--plot", type=Path, default=Path("soak.png"))
    p.add_argument("--json", type=Path, default=None, help="write the report and samples here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # one line per sample: `tail -f` shows the run's progress
    quiet_handler_failures()
    rule = SOAK_60 if args.warmup is None else Rule(warmup=args.warmup)
    kafka, nats = broker_endpoints(args.brokers, args.kafka, args.nats)
    watched = () if args.kafka or args.nats else BROKERS[args.brokers]
    pids_before = broker_pids(watched)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log.info("soak: brokers %s (pids %s), rule %s", [kafka, nats], pids_before, rule)
    with tempfile.TemporaryDirectory(prefix="hexa-soak-") as tmp:
        report = asyncio.run(
            run(
                args.minutes * 60,
                args.rate,
                args.sample_every,
                rule,
                kafka,
                Path(tmp),
                tuple(args.engines.split(",")),
                nats=nats,
                otel=args.otel,
                outbox_every=args.outbox_every,
                heap=HeapDiff(args.tracemalloc) if args.tracemalloc else None,
            )
        )
    pids_after = broker_pids(watched)
    report.brokers = {
        "kafka": kafka,
        "nats": nats,
        "started_at": started_at,
        "pids_before": pids_before,
        "pids_after": pids_after,
        "restarted": [n for n in watched if pids_before[n] != pids_after[n]],
    }
    plot(report, args.plot)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), separators=(",", ":")) + "\n")
    print(report.summary())
    print(f"brokers: {report.brokers}")
    print(f"plot: {args.plot.resolve()}")
    try:
        check(report)
    except SoakError:
        print("SOAK FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
