"""``hexa-event run --reload``: a change to a .py file restarts the worker process."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

from runner_helpers import HERE, Ledger, Runner, app_env

from hexa_event.testing import eventually


async def test_reload_restarts_on_a_source_change(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(HERE / "runner_app.py", app / "runner_app.py")
    ledger = Ledger(tmp_path / "ledger")
    env = app_env(f"sqlite:///{tmp_path / 'log.db'}", ledger.path)
    runner = Runner(env, tmp_path / "run.log", "--app-dir", str(app), "--reload")
    try:

        def builders() -> list[int]:
            return [x.pid for x in ledger.lines() if x.what == "built"]

        await eventually(lambda: len(builders()) == 1, within=60, what="first worker")
        await eventually(lambda: "serving 1 receiver" in runner.output(), within=60)
        with (app / "runner_app.py").open("a") as source:
            source.write("\n# changed\n")
        await eventually(lambda: len(builders()) == 2, within=60, what="restarted worker")
        assert builders()[0] != builders()[1]
        await eventually(lambda: runner.output().count("serving 1 receiver") == 2, within=60)
        runner.signal(signal.SIGTERM)
        code, _ = await runner.wait(60)
    finally:
        runner.kill()
    output = runner.output()
    assert code == 0, output[-3000:]
    assert "changed:" in output
    assert ledger.count("closed") == 2, "a worker did not close cleanly"
