"""STAN driver fixtures: the shared server of ``scripts/services up stan``, and private ones."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stan_helpers import PrivateStan, shared_url, stan_binary

from hexa_event_services import require_service


@pytest.fixture
def stan_url() -> str:
    """The shared server's URL (skips, or fails in CI, when it does not answer)."""
    require_service("stan")
    return shared_url()


@pytest.fixture
def private_stan(tmp_path: Path) -> Iterator[Any]:
    """Start private servers: ``private_stan(*flags, store="MEMORY")``; all stopped after."""
    binary = stan_binary()
    if not binary.is_file():
        pytest.skip("nats-streaming-server is not installed: run `scripts/services up stan`")
    servers: list[PrivateStan] = []

    def start(*flags: str, store: str = "MEMORY") -> PrivateStan:
        directory = tmp_path / f"stan-{len(servers)}"
        directory.mkdir()
        server = PrivateStan(directory, *flags, store=store)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()
