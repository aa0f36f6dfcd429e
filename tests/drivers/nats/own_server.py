"""A nats-server of a test's own: a free loopback port and a data directory of its own, so
a test may stop, kill and start it without touching the shared server on 4222."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from pathlib import Path

from hexa_event_services import get_service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnNatsServer:
    """``url`` is the server's; :meth:`start` again after :meth:`kill` keeps the store."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._home = home
        self._proc: subprocess.Popen[bytes] | None = None

    async def start(self, within: float = 30.0) -> None:
        """Start the server and return once it accepts connections."""
        binary = get_service("nats").binary  # type: ignore[attr-defined]
        command = [
            str(binary),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self._home / "store"),
            "--server_name",
            f"hexa-own-{self.port}",
        ]
        self._proc = self._spawn(command)
        deadline = time.monotonic() + within
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = (self._home / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"own nats-server did not start: {log}")
            await asyncio.sleep(0.05)

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        with (self._home / "server.log").open("ab") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: the server is gone at once (a crash); the store stays."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown."""
        self._stop(signal.SIGTERM)

    def _stop(self, how: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(how)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
