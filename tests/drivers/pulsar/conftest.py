"""Pulsar driver tests: every test here needs the broker of ``scripts/services up pulsar``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import hexa_event_services as services
from hexa_event.drivers.pulsar import PulsarDriver


@pytest.fixture
def pulsar_url() -> str:
    """The broker's service URL (skips, or fails in CI, when it does not answer)."""
    return services.require_service("pulsar").url


@pytest.fixture
def admin_url() -> str:
    services.require_service("pulsar")
    return services.env("HEXA_PULSAR_ADMIN_URL")


@pytest.fixture
async def make_driver(
    pulsar_url: str, admin_url: str
) -> AsyncIterator[Callable[..., Awaitable[PulsarDriver]]]:
    """Make drivers (one per simulated process); all are closed after the test."""
    made: list[PulsarDriver] = []

    async def make(**options: Any) -> PulsarDriver:
        options.setdefault("service_url", pulsar_url)
        options.setdefault("admin_url", admin_url)
        driver = PulsarDriver(**options)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.close()
