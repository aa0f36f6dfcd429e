"""Shared settings of the NATS driver tests."""

from __future__ import annotations

import os
from typing import Any

TEST_OPTIONS: dict[str, Any] = {
    "stream": "HEXA_TEST",
    "subject_prefix": "hexa-test",
    "max_age": 3600.0,
    "consumer_inactive_threshold": 600.0,
}
"""Tests use a stream of their own whose records and idle consumers expire."""


def nats_url() -> str:
    return os.environ.get("HEXA_NATS_URL", "nats://127.0.0.1:4222")
