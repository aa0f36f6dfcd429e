"""NATS JetStream driver tests: every test here needs ``scripts/services up nats``."""

from __future__ import annotations

import os

import pytest

from hexa_event.testing.services import require_service

pytestmark = pytest.mark.nats


def nats_url() -> str:
    return os.environ.get("HEXA_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
def nats_server() -> str:
    """The server's URL (skips, or fails in CI, when it does not answer)."""
    require_service("nats")
    return nats_url()
