"""Helpers of the STAN tests: the shared server's URL, unique names, private servers.

Tests that must restart a server or change its limits start a private nats-streaming-server
of their own (same binary, a free loopback port, a temporary store) and never touch the
shared one; only the fault test restarts the shared server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from hexa_event.drivers.stan import StanDriver
from hexa_event_services import get_service, stan_probe
from hexa_event_services.definitions.nats import Stan


def shared_url(**params: Any) -> str:
    """The shared server's ``stan://`` URL with extra query parameters."""
    nats_url = os.environ.get("HEXA_STAN_URL", "nats://127.0.0.1:4223")
    cluster = os.environ.get("HEXA_STAN_CLUSTER_ID", "hexa-event")
    query = "&".join([f"cluster_id={cluster}", *(f"{k}={v}" for k, v in params.items())])
    return f"stan://{nats_url.split('://', 1)[1]}?{query}"


def monitor_url() -> str:
    """The shared server's HTTP monitoring address (its -m port)."""
    return os.environ.get("HEXA_STAN_MONITOR_URL", "http://127.0.0.1:8223")


def stan_binary() -> Path:
    """Where ``scripts/services`` installed nats-streaming-server."""
    service = get_service("stan")
    assert isinstance(service, Stan)
    return service.binary


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateStan:
    """A nats-streaming-server of this test's own, on a free port."""

    cluster_id = "hexa-private"

    def __init__(self, directory: Path, *flags: str, store: str = "MEMORY") -> None:
        self.port = _free_port()
        self.directory = directory
        self.flags = flags
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"stan://127.0.0.1:{self.port}?cluster_id={self.cluster_id}"

    def driver(self, **options: Any) -> StanDriver:
        return StanDriver.from_url(self.url, **options)

    def start(self) -> None:
        binary = stan_binary()
        argv = [
            str(binary),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--cluster_id",
            self.cluster_id,
            "--store",
            self.store,
            *(["--dir", str(self.directory / "store")] if self.store == "FILE" else []),
            *self.flags,
        ]
        log = (self.directory / "server.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                stan_probe(f"nats://127.0.0.1:{self.port}", self.cluster_id, timeout=2)
                return
            except (OSError, ConnectionError, ValueError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(
                        f"private nats-streaming-server did not start: "
                        f"{(self.directory / 'server.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
