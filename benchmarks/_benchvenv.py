"""The benchmarks' own virtualenv: FastStream (the peer we compare with) and matplotlib.

Neither is a dependency of hexa-event: they live in ``benchmarks/.bench-venv`` (git-ignored),
created and filled on first use with pinned versions, and run as subprocesses from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("HEXA_BENCH_VENV", HERE / ".bench-venv"))
FASTSTREAM_VERSION = "0.7.8"
REQUIREMENTS = (
    f"faststream[kafka,confluent,nats]=={FASTSTREAM_VERSION}",
    "matplotlib>=3.8",
)


def python() -> Path:
    """The venv's interpreter, creating and filling the venv first when needed."""
    exe = VENV / "bin" / "python"
    stamp = VENV / ".requirements"
    wanted = "\n".join(REQUIREMENTS)
    if exe.exists() and stamp.exists() and stamp.read_text() == wanted:
        return exe
    print(f"-- preparing {VENV} ({', '.join(REQUIREMENTS)})", flush=True)
    if not exe.exists():
        subprocess.run([_base_python(), "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(exe), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
        check=True,
    )
    stamp.write_text(wanted)
    return exe


def _base_python() -> str:
    """The interpreter our own venv was made from (a venv inside a venv is avoided)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base) if base.exists() else sys.executable
