"""Start ``hexa-event run`` subprocesses on the test app and read its ledger back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hexa_event as he

HERE = Path(__file__).resolve().parent
APP = "runner_app:build"


@dataclass
class Line:
    what: str
    n: str
    pid: int
    at: float


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[Line]:
        if not self.path.exists():
            return []
        out = []
        for raw in self.path.read_text().splitlines():
            what, n, pid, at = raw.split()
            out.append(Line(what, n, int(pid), float(at)))
        return out

    def of(self, what: str, pid: int | None = None) -> list[str]:
        return [x.n for x in self.lines() if x.what == what and (pid is None or x.pid == pid)]

    def count(self, what: str, pid: int | None = None) -> int:
        return len(self.of(what, pid))


class Runner:
    """One ``hexa-event run`` process; its stderr goes to a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._out = log.open("wb")
        argv = [sys.executable, "-m", "hexa_event.cli", "run", APP, "--app-dir", str(HERE)]
        self.process = subprocess.Popen(
            [*argv, *args], env={**os.environ, **env}, stdout=self._out, stderr=self._out
        )
        self.pid = self.process.pid
        self.signalled_at = 0.0

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.signalled_at = self.signalled_at or time.monotonic()
        self.process.send_signal(sig)

    async def wait(self, within: float) -> tuple[int, float]:
        """(exit status, seconds since the first signal)."""
        try:
            code = await asyncio.to_thread(self.process.wait, within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"runner {self.pid} did not exit within {within}s:\n{self.output()[-3000:]}"
            ) from None
        finally:
            self._out.close()
        return code, time.monotonic() - self.signalled_at

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._out.close()


def app_env(url: str, ledger: Path, **extra: Any) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "HEXA_RUN_URL": url,
        "HEXA_RUN_CHANNEL": f"run-{suffix}",
        "HEXA_RUN_ACTION": f"run-act-{suffix}",
        "HEXA_RUN_LEDGER": str(ledger),
        "HEXA_EVENT_LOG_LEVEL": "INFO",
    }
    env.update({f"HEXA_RUN_{k.upper()}": str(v) for k, v in extra.items()})
    return env


async def emit(url: str, channel: str, numbers: range, key: str | None = None) -> None:
    conn = he.connect(url)
    try:
        events = [he.Event(channel=channel, key=key or f"k{n}", payload={"n": n}) for n in numbers]
        await conn.emitter().emit_many(events)
    finally:
        await conn.close()


def duplicates(items: list[str]) -> dict[str, int]:
    return {k: v for k, v in Counter(items).items() if v > 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
