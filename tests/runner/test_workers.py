"""``hexa-event run --workers N``: the supervisor restarts a killed worker, gives up on a
crash loop, and refuses ``memory://`` with several workers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from runner_helpers import Ledger, Runner, app_env, emit

from hexa_event.testing import eventually

EVENTS = 1500


async def test_a_killed_worker_is_restarted_and_every_event_handled(
    sql_engine: str, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "ledger")
    env = app_env(sql_engine, ledger.path, delay=0.01, concurrency=8, drain=20)
    await emit(sql_engine, env["HEXA_RUN_CHANNEL"], range(EVENTS))
    supervisor = Runner(env, tmp_path / "run.log", "--workers", "2")
    try:

        def handling_pids() -> set[int]:
            return {x.pid for x in ledger.lines() if x.what == "start"}

        await eventually(lambda: len(handling_pids()) == 2, within=90, what="two workers busy")
        assert len(set(ledger.of("done"))) < EVENTS, "all handled before the kill: no load"
        victim = min(handling_pids())
        os.kill(victim, signal.SIGKILL)
        built = {x.pid for x in ledger.lines() if x.what == "built"}
        await eventually(
            lambda: len({x.pid for x in ledger.lines() if x.what == "built"} - built) == 1,
            within=60,
            what="a worker restarted",
        )
        await eventually(
            lambda: len(set(ledger.of("done"))) == EVENTS, within=180, what="every event"
        )
        supervisor.signal(signal.SIGTERM)
        code, _ = await supervisor.wait(60)
    finally:
        supervisor.kill()
    output = supervisor.output()
    assert code == 0, output[-3000:]
    assert "died with status -9" in output
    assert sorted(set(map(int, ledger.of("done")))) == list(range(EVENTS))


async def test_a_crash_looping_worker_is_reported(tmp_path: Path) -> None:
    env = app_env(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "ledger", crash=1)
    supervisor = Runner(env, tmp_path / "run.log", "--workers", "2", "--max-restarts", "2")
    try:
        code, _ = await supervisor.wait(120)
    finally:
        supervisor.kill()
    output = supervisor.output()
    assert code == 1, output[-3000:]
    assert "keeps crashing: it died 3 times in a row" in output
    assert "this factory always fails" in output


async def test_memory_with_several_workers_is_refused(tmp_path: Path) -> None:
    env = app_env("memory://runner", tmp_path / "ledger")
    supervisor = Runner(env, tmp_path / "run.log", "--workers", "2")
    try:
        code, _ = await supervisor.wait(120)
    finally:
        supervisor.kill()
    output = supervisor.output()
    assert code == 2, output[-3000:]
    assert "private memory log" in output
    assert "not restarting it" in output
