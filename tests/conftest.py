"""Shared fixtures: SQL databases (SQLite files, a PostgreSQL database per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db_helpers import create_pg_database, drop_pg_database, reset_tables
from hexa_event_services import require_service

# A test that takes one of these fixtures needs that engine, whatever file it lives in, so
# `-m "not kafka"` (make unit, make quick) leaves it out. A ``pytestmark`` in a conftest.py
# marks nothing: pytest reads it only from test modules.
ENGINE_FIXTURES = {
    "kafka_bootstrap": "kafka",
    "pulsar_url": "pulsar",
    "admin_url": "pulsar",
    "pulsar_urls": "pulsar",
    "nats_server": "nats",
    "nats_url": "nats",
    "stan_url": "stan",
    "stan_endpoint": "stan",
    "private_stan": "stan",
    "pg_database": "postgres",
    "pg_url": "postgres",
    "postgres_url": "postgres",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for engine in {ENGINE_FIXTURES[n] for n in names if n in ENGINE_FIXTURES}:
            item.add_marker(getattr(pytest.mark, engine))


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database of its own on the test PostgreSQL, dropped at the end of the session."""
    require_service("postgres")
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL (no driver named) with empty outbox and inbox tables."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    reset_tables(url)
    return url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    reset_tables(pg_database)
    return pg_database
