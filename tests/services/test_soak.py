"""The soak in two minutes (``make soak`` runs the 20-minute one): about 1,000 events/s over
the memory, SQLite and Kafka drivers in this process, with failing handlers so that retries
and dead letters run; RSS, fds, tasks, threads and the backlog sampled every 10 s must not
keep growing after a 40 s warm-up. The plot goes to ``$HEXA_SOAK_PLOT`` (default: the
test's temporary directory) and its path is printed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import soak_runner

from hexa_event_services import require_service

pytestmark = [pytest.mark.soak, pytest.mark.kafka, pytest.mark.timeout(600)]

MINUTES = float(os.environ.get("HEXA_SOAK_MINUTES", "2"))


async def test_soak(tmp_path: Path) -> None:
    kafka = require_service("kafka").url
    dispatch_log = logging.getLogger("hexa_event.dispatch")
    level = dispatch_log.level
    soak_runner.quiet_handler_failures()  # thousands of deliberate failures: not logged
    try:
        report = await soak_runner.run(
            duration=MINUTES * 60,
            rate=1000.0,
            sample_every=10.0,
            warmup=40.0,
            kafka=kafka,
            workdir=tmp_path,
        )
    finally:
        dispatch_log.setLevel(level)
    plot = Path(os.environ.get("HEXA_SOAK_PLOT") or tmp_path / "soak.png")
    soak_runner.plot(report, plot)
    print(f"\n{report.summary()}\nplot: {plot}")
    soak_runner.check(report)
