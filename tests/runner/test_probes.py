"""``--http-port``: /readyz, /livez and /metrics of a ``hexa-event run`` process (SQLite).

One handler blocks (key ``block``) until the test creates a file: /livez turns 503 once it
ran past ``stall_timeout``, and the lag gauge in /metrics rises with the events queued
behind it, then both recover when it returns."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
from runner_helpers import Ledger, Runner, app_env, emit, free_port

from hexa_event.testing import eventually


def get(port: int, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except httpx.TransportError:
        return None


def lag(port: int, channel: str) -> float | None:
    """The ``hexa_event_consumer_lag`` sample of ``channel`` in /metrics (None: absent)."""
    response = get(port, "/metrics")
    if response is None:
        return None
    for line in response.text.splitlines():
        if line.startswith("hexa_event_consumer_lag{") and f'channel="{channel}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def status(port: int, path: str) -> int:
    response = get(port, path)
    return 0 if response is None else response.status_code


async def test_readyz_before_and_after_start_livez_on_a_stalled_handler(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    ledger = Ledger(tmp_path / "ledger")
    gate, block = tmp_path / "gate", tmp_path / "block"
    env = app_env(
        url, ledger.path, gate=gate, block=block, stall=1.0, telemetry=1, lag_interval=0.2
    )
    channel = env["HEXA_RUN_CHANNEL"]
    port = free_port()
    runner = Runner(env, tmp_path / "run.log", "--http-port", str(port), "--http-host", "127.0.0.1")
    try:
        await eventually(lambda: status(port, "/readyz") != 0, within=60, what="probe server")
        before = get(port, "/readyz")
        assert before is not None
        assert before.status_code == 503, before.text
        assert "starting" in before.json()["reason"]
        assert status(port, "/livez") == 200

        gate.touch()  # the factory builds the receiver now
        await eventually(lambda: status(port, "/readyz") == 200, within=60, what="ready")
        ready = get(port, "/readyz")
        assert ready is not None
        assert ready.json()["ready"] is True

        await emit(url, channel, range(1), key="block")
        await eventually(lambda: ledger.count("start") == 1, within=30, what="handler running")
        await emit(url, channel, range(1, 21), key="block")  # queued behind the blocked one
        await eventually(
            lambda: (lag(port, channel) or 0) >= 21, within=30, what="the lag gauge rising"
        )
        await eventually(lambda: status(port, "/livez") == 503, within=30, what="livez 503")
        stalled = get(port, "/livez")
        assert stalled is not None
        assert "stall_timeout" in stalled.json()["reason"], stalled.text

        block.touch()  # the handler returns
        await eventually(lambda: ledger.count("done") == 21, within=30, what="all handled")
        await eventually(lambda: status(port, "/livez") == 200, within=30, what="livez 200")
        await eventually(lambda: lag(port, channel) == 0, within=30, what="the lag falling")

        metrics = get(port, "/metrics")
        assert metrics is not None
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "hexa_event_handled_total" in metrics.text
        assert "hexa_event_consumer_in_flight" in metrics.text
        assert status(port, "/nope") == 404

        runner.signal(signal.SIGTERM)
        code, _ = await runner.wait(60)
    finally:
        runner.kill()
    assert code == 0, runner.output()[-3000:]


async def test_a_taken_port_is_refused_not_crash_looped(tmp_path: Path) -> None:
    """uvicorn would sys.exit() when it cannot bind; the runner binds first and says why."""
    env = app_env(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "ledger")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        alone = Runner(
            env, tmp_path / "alone.log", "--http-port", str(port), "--http-host", "127.0.0.1"
        )
        workers = Runner(
            env, tmp_path / "workers.log", "--workers", "2", "--http-port", str(port - 1)
        )
        try:
            code, _ = await alone.wait(60)
            workers_code, _ = await workers.wait(60)
        finally:
            alone.kill()
            workers.kill()
    assert code == 2, alone.output()[-3000:]
    assert f"cannot listen on 127.0.0.1:{port}" in alone.output()
    assert "Traceback" not in alone.output()
    assert workers_code == 2, workers.output()[-3000:]
    assert "refused its configuration" in workers.output()
    assert f"cannot listen on 0.0.0.0:{port}" in workers.output()  # worker 1: port - 1 + 1
