"""Relays and cleaners in the runner's probes: /readyz turns 503 naming what fails once a
relay's claims (or a cleaner's runs) have failed for ``unhealthy_after``, and 200 again once
they work; /livez turns 503 when a relay's batch hangs. In process (``Service``) and through
``hexa-event run --http-port``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from runner_helpers import HERE, free_port

import hexa_event as he
from db_helpers import create_pg_database, drop_pg_database
from hexa_event.driver import RawRecord
from hexa_event.outbox import Outbox, OutboxCleaner, OutboxRelay, migrate, migrate_async
from hexa_event.runner import Service
from hexa_event.testing import eventually


class Hanging(he.Connection):
    """A persistent driver whose publish never returns (a broker that stopped answering)."""

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await asyncio.Event().wait()


async def test_readiness_names_a_relay_and_a_cleaner_that_fail(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"  # no outbox table yet: claims and deletes fail
    log = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    relay = OutboxRelay(db, log, unhealthy_after=0.3, poll_interval=0.05, retry_delay=0.05)
    cleaner = OutboxCleaner(db, interval=0.05, unhealthy_after=0.3)
    service = Service([relay, cleaner, log], gc_tuning=False)
    running = asyncio.create_task(service.run())
    try:
        name = relay.health()["relay"]
        failing = (
            f"{name}: claiming has failed",
            "outbox rows of hexa_outbox: cleaning has failed",
        )
        await eventually(
            lambda: all(f in service.readiness()[1]["reason"] for f in failing), what="unready"
        )
        ready, body = service.readiness()
        assert not ready
        assert body["loops"][name]["state"] == "running"
        assert "hexa_outbox" in body["loops"][name]["claim_error"]
        assert service.liveness()[0]  # a restart would not bring the table back

        migrate(db)
        await eventually(lambda: service.readiness()[0], what="ready again")
        assert service.readiness()[1]["reason"] == "ok"
        service.stop()
        await asyncio.wait_for(running, 30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_liveness_fails_while_a_relay_batch_hangs(tmp_path: Path) -> None:
    log = he.connect(f"sqlite:///{tmp_path / 'log.db'}")
    relay = OutboxRelay(
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}",
        Hanging(log),
        unhealthy_after=0.3,
        poll_interval=0.05,
        lease=0.5,  # stalled past 2 * lease + unhealthy_after
    )
    await migrate_async(relay.engine)
    async with relay.engine.begin() as conn:
        await Outbox().emit_async(conn, he.Event(channel="orders", key="k", payload={}))
    service = Service([relay, log], gc_tuning=False)
    running = asyncio.create_task(service.run())
    try:
        await eventually(lambda: not service.liveness()[0], what="not alive")
        reason = service.liveness()[1]["reason"]
        assert "a batch has been publishing or marking sent for" in reason, reason
        assert relay.health()["stalled"]
        service.stop()
        service.stop()  # the batch never ends: cut it short
        await asyncio.wait_for(running, 30)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await relay.close()


def start(argv: list[str], env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=out, stderr=out)


def get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return None


def status(port: int, path: str) -> int:
    response = get(port, path)
    return 0 if response is None else response.status_code


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An application database without the outbox table."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


async def test_hexa_event_run_probes_report_a_failing_relay(tmp_path: Path, app_db: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HEXA_RELAY_DB": app_db,
        "HEXA_RELAY_TO": f"sqlite:///{tmp_path / 'log.db'}",
        "HEXA_EVENT_LOG_LEVEL": "INFO",
    }
    argv = [sys.executable, "-m", "hexa_event.cli", "run", "relay_app:build"]
    argv += ["--app-dir", str(HERE), "--http-port", str(port), "--http-host", "127.0.0.1"]
    out = (tmp_path / "run.log").open("wb")
    process = start(argv, env, out)
    try:
        await eventually(lambda: status(port, "/readyz") == 503, within=60, what="readyz 503")
        await eventually(
            lambda: "claiming has failed" in (get(port, "/readyz") or httpx.Response(0)).text,
            within=30,
            what="the relay named",
        )
        response = get(port, "/readyz")
        assert response is not None
        body = response.json()
        assert "cleaning has failed" in body["reason"] or "claiming" in body["reason"]
        assert any(name.startswith("hexa_outbox -> ") for name in body["loops"]), body
        assert status(port, "/livez") == 200

        migrate(app_db)
        await eventually(lambda: status(port, "/readyz") == 200, within=30, what="readyz 200")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.close()
    text = (tmp_path / "run.log").read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "outbox relay: claiming has failed" in text  # logged once, at ERROR
    assert "outbox relay: claiming works again" in text
