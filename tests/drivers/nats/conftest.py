"""NATS JetStream driver tests: every test here needs ``scripts/services up nats``."""

from __future__ import annotations

import pytest
from nats_helpers import nats_url

from hexa_event_services import require_service


@pytest.fixture
def nats_server() -> str:
    """The server's URL (skips, or fails in CI, when it does not answer)."""
    require_service("nats")
    return nats_url()
