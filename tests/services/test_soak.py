"""The soak in two minutes (``make soak`` runs the 60-minute one): about 900 events/s over
the SQLite, Kafka and JetStream drivers in this process, with OpenTelemetry tracing and
metrics on (the real SDK, exporting to counters), failing handlers so that retries and dead
letters run, and every tenth emit batch through an outbox and its relay. RSS, fds, tasks,
threads and the backlog are sampled every 5 s and judged by :data:`SHORT` (the 60-minute
rule's checks with a 40 s warm-up and limits two minutes can measure). The plot goes to
``$HEXA_SOAK_PLOT`` (default: the test's temporary directory) and its path is printed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import soak_runner
from soak_rule import Rule

from hexa_event_services import require_service

pytestmark = [pytest.mark.soak, pytest.mark.kafka, pytest.mark.nats, pytest.mark.timeout(600)]

MINUTES = float(os.environ.get("HEXA_SOAK_MINUTES", "2"))

SHORT = Rule(
    warmup=40.0,
    rss_slope_mib_per_hour=600.0,  # 10 MiB a minute: two minutes only catch a gross leak
    rss_shift_mib=20.0,
    median_window=20.0,
    fds_margin=8,  # SQLite's journal fds come and go (one run ended at warm-up max + 4); a
    # leak per event or per batch would pass this margin within seconds at 900 events/s
    threads_margin=2,
    tasks_margin=50,
)


async def test_soak(tmp_path: Path) -> None:
    kafka = require_service("kafka").url
    nats = require_service("nats").url
    dispatch_log = logging.getLogger("hexa_event.dispatch")
    level = dispatch_log.level
    soak_runner.quiet_handler_failures()  # thousands of deliberate failures: not logged
    try:
        report = await soak_runner.run(
            duration=MINUTES * 60,
            rate=900.0,
            sample_every=5.0,
            rule=SHORT,
            kafka=kafka,
            workdir=tmp_path,
            engines_wanted=("sqlite", "kafka", "jetstream"),
            nats=nats,
            otel=True,
            outbox_every=10,
        )
    finally:
        dispatch_log.setLevel(level)
    plot = Path(os.environ.get("HEXA_SOAK_PLOT") or tmp_path / "soak.png")
    soak_runner.plot(report, plot)
    print(f"\n{report.summary()}\nplot: {plot}")
    assert report.otel
    assert report.otel["spans_exported"] > report.emitted
    soak_runner.check(report)
