"""Smoke tests of the real services, each through the raw client its driver uses.

Every test module here carries its service's marker and asks ``require_service`` first:
an absent service skips with the command that starts it, except under ``CI=true`` where it
fails. Start them with ``scripts/services up [NAMES...]``.
"""

from __future__ import annotations

import pytest

import hexa_event_services as services


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return services.require_service("kafka").url


@pytest.fixture(scope="session")
def pulsar_urls() -> tuple[str, str]:
    svc = services.require_service("pulsar")
    return svc.url, services.env("HEXA_PULSAR_ADMIN_URL")


@pytest.fixture(scope="session")
def nats_url() -> str:
    return services.require_service("nats").url


@pytest.fixture(scope="session")
def stan_endpoint() -> tuple[str, str]:
    svc = services.require_service("stan")
    return svc.url, services.env("HEXA_STAN_CLUSTER_ID")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return services.require_service("postgres").url
