"""Runner fixtures: an engine URL per engine the SIGTERM test runs on; every test starts and
ends with the heap unfrozen, the collector on and CPython's thresholds (the runner freezes the
heap and raises the young threshold while serving)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hexa_event_services import require_service


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.unfreeze()
    gc.enable()
    gc.set_threshold(700, 10, 10)


ENGINES = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("kafka", marks=pytest.mark.kafka),
    pytest.param("nats", marks=pytest.mark.nats),
    pytest.param("pulsar", marks=pytest.mark.pulsar),
    pytest.param("stan", marks=pytest.mark.stan),
]


def engine_url(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if engine == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    if engine == "postgresql":
        return str(request.getfixturevalue("pg_database"))
    service = require_service("stan" if engine == "stan" else engine)
    if engine == "kafka":
        return "kafka://" + os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    if engine == "stan":
        nats = os.environ.get("HEXA_STAN_URL", "nats://127.0.0.1:4223").split("://", 1)[1]
        cluster = os.environ.get("HEXA_STAN_CLUSTER_ID", "hexa-event")
        return f"stan://{nats}?cluster_id={cluster}"
    return str(service.url)


@pytest.fixture(params=ENGINES)
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL on each engine in turn."""
    return engine_url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_engine(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return engine_url(request.param, request, tmp_path)
