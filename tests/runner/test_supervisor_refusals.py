"""What the supervisor refuses and says: ``--reload`` that cannot watch (watchfiles missing,
a directory that does not exist) stops with exit status 2 instead of serving on without ever
reloading; probe ports past 65535 are refused before any worker starts."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest
from runner_helpers import APP, HERE, app_env

from hexa_event.errors import ConfigurationError
from hexa_event.runner.supervisor import Supervisor


@pytest.mark.parametrize("cause", ["missing directory", "no watchfiles"])
async def test_a_reload_that_cannot_watch_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, cause: str
) -> None:
    for name, value in app_env(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "ledger").items():
        monkeypatch.setenv(name, value)
    watched = tmp_path
    if cause == "no watchfiles":
        monkeypatch.setitem(sys.modules, "watchfiles", None)  # import fails
    else:
        watched = tmp_path / "no-such-dir"
    supervisor = Supervisor(APP, workers=1, app_dir=str(HERE), reload_dirs=[str(watched)])
    caplog.set_level(logging.ERROR, logger="hexa_event.runner.supervisor")
    running = asyncio.create_task(supervisor.run())
    done, _ = await asyncio.wait({running}, timeout=20)
    if not done:  # main's behaviour: a worker serving on, never reloaded
        supervisor.stop()
        await asyncio.wait_for(running, 60)
        pytest.fail("--reload could not watch, and the supervisor served on without saying so")
    assert running.result() == 2
    expected = "needs watchfiles" if cause == "no watchfiles" else "cannot watch"
    assert expected in caplog.text


def test_probe_ports_past_65535_are_refused_before_any_worker_starts() -> None:
    """Worker i serves on PORT + i: the last one's port must exist, or it would crash-loop
    on its own command line (exit 1 after the back-offs) instead of a refusal."""
    with pytest.raises(ConfigurationError, match="up to 65534"):
        Supervisor(APP, workers=2, http_port=65535)
    Supervisor(APP, workers=2, http_port=65534)  # the last port is 65535: fine
