"""The hexa-event wheel ships the library only: no service harness, nothing test-only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_leaves_out_the_service_harness(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("hexa_event-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert modules, names
    assert all(n.startswith("hexa_event/") for n in modules), modules
    assert "hexa_event/testing/services.py" not in modules
    assert "hexa_event/testing/__init__.py" in modules  # what library users need stays
    assert "hexa_event/testing/conformance.py" in modules
    for name in modules:
        text = zipfile.ZipFile(wheel).read(name).decode()
        assert "apt-get" not in text, name
        assert "hexa_event_services" not in text, name
