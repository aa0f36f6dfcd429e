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

PARTITIONS = 4
PARTITIONED_OPTIONS: dict[str, Any] = {
    **TEST_OPTIONS,
    "stream": f"HEXA_TEST_P{PARTITIONS}",
    "subject_prefix": f"hexa-test-p{PARTITIONS}",
    "partitions": PARTITIONS,
    "consumer_inactive_threshold": 60.0,
}
"""The partitioned layout: a stream of its own (a stream's partition count is fixed).
Every action has a consumer per partition, so idle ones go sooner (a stream holds at most
1,000 consumers on the test server)."""


def nats_url() -> str:
    return os.environ.get("HEXA_NATS_URL", "nats://127.0.0.1:4222")
