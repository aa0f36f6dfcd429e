"""`make demo` works: the example service runs on the embedded SQLite default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def test_demo_charges_once_retries_and_dead_letters(tmp_path: Path) -> None:
    for run in (1, 2):  # the second run starts from the log and inbox the first one left
        done = subprocess.run(
            [sys.executable, str(DEMO)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "4 events reached billing, 3 cards were charged" in out
        assert f"billing's table holds {3 * run} charges" in out
        assert "duplicate acked" in out
        assert "4 receipts sent after 4 failed tries" in out
        assert "ended as 4 dead letters" in out
    assert (tmp_path / "data" / "demo.db").exists()
