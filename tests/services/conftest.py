"""Smoke tests of the real services, each through the raw client its driver uses.

Every test module here carries its service's marker and asks ``require_service`` first:
an absent service skips with the command that starts it, except under ``CI=true`` where it
fails. Start them with ``scripts/services up [NAMES...]``.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def _all_running(nodes: list[services.Service]) -> list[services.Service]:
    """``nodes``, a node a failed test left down started again (its data kept)."""
    for node in nodes:
        if not node.is_ready(timeout=2.0):
            node.start(fresh=False)
    return nodes


@pytest.fixture(scope="session")
def kafka_cluster_nodes() -> Iterator[list[services.Service]]:
    """The three-node Kafka cluster, started for the session when it was not running (and
    stopped again at the end in that case)."""
    nodes, started = services.on_demand("kafka-cluster")
    yield nodes
    if started:
        services.stop_all(nodes)


@pytest.fixture
def kafka_cluster(kafka_cluster_nodes: list[services.Service]) -> list[services.Service]:
    """The cluster's nodes, every one of them running (a node a failed test left down is
    started again, its data kept)."""
    return _all_running(kafka_cluster_nodes)


@pytest.fixture
def kafka_cluster_bootstrap(kafka_cluster: list[services.Service]) -> str:
    return ",".join(node.url for node in kafka_cluster)


def _on_demand_fixture(name: str) -> Iterator[services.Service]:
    (svc,), started = services.on_demand(name)
    yield svc
    if started:
        services.stop_all([svc])


@pytest.fixture(scope="session")
def kafka_secure() -> Iterator[services.Service]:
    """The TLS + SASL/SCRAM Kafka node (``scripts/services up kafka-secure``), started for
    the session when it was not running."""
    yield from _on_demand_fixture("kafka-secure")


@pytest.fixture(scope="session")
def postgres_auth() -> Iterator[services.Service]:
    """PostgreSQL with password authentication (``scripts/services up postgres-auth``),
    started for the session when it was not running."""
    yield from _on_demand_fixture("postgres-auth")


@pytest.fixture(scope="session")
def nats_cluster_nodes() -> Iterator[list[services.Service]]:
    """The three-node JetStream cluster, started for the session when it was not running
    (and stopped again at the end in that case)."""
    nodes, started = services.on_demand("nats-cluster")
    yield nodes
    if started:
        services.stop_all(nodes)


@pytest.fixture
def nats_cluster(nats_cluster_nodes: list[services.Service]) -> list[services.Service]:
    """The cluster's nodes, every one of them running (a node a failed test left down is
    started again, its data kept)."""
    return _all_running(nats_cluster_nodes)


@pytest.fixture(scope="session")
def nats_solo() -> Iterator[services.Service]:
    """A JetStream server of the tests' own (``scripts/services up nats-solo``), which they
    may stop and start; started for the session when it was not running."""
    yield from _on_demand_fixture("nats-solo")
