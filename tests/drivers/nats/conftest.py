"""NATS JetStream driver tests: every test here needs ``scripts/services up nats``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats_helpers import nats_url
from own_server import OwnNatsServer

from hexa_event_services import require_service


@pytest.fixture
def nats_server() -> str:
    """The server's URL (skips, or fails in CI, when it does not answer)."""
    require_service("nats")
    return nats_url()


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[OwnNatsServer]:
    """A nats-server of the test's own (a free loopback port, its own store), killed after."""
    server = OwnNatsServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        server.kill()
