"""Kafka driver tests: every test here needs the broker of ``scripts/services up kafka``."""

from __future__ import annotations

import os

import pytest

from hexa_event_services import require_service


def bootstrap() -> str:
    return os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture
def kafka_bootstrap() -> str:
    """The broker's bootstrap address (skips, or fails in CI, when it does not answer)."""
    require_service("kafka")
    return bootstrap()
