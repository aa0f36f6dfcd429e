"""Shared fixtures: SQL databases (SQLite files, a PostgreSQL database per session); the
markers that place each test in a phase of ``make test``, and the guard that keeps broker
faults in the serial phase (CONTRIBUTING.md, the testing section)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db_helpers import create_pg_database, drop_pg_database, reset_tables
from fault_helpers import guard_lifecycle
from hexa_event_services import Service, require_service

# The engines' shared attack rounds assert in a helper module: show the values they compared.
pytest.register_assert_rewrite("attack_helpers")

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


# A session fixture that starts an on-demand service (or builds a program into a fixed path)
# runs once per xdist worker: the tests taking it share one worker of the parallel phase
# (``--dist loadgroup``), so two workers never start, stop or build the same thing. A
# fixture named here with a trailing ":" gets a group per test module.
ONE_WORKER_FIXTURES = {
    "kafka_cluster_nodes": "kafka-cluster",
    "kafka_secure": "kafka-secure",
    "postgres_auth": "postgres-auth",
    "nats_cluster_nodes": "nats-cluster",
    "nats_solo": "nats-cluster",  # the cluster's tests use both
    "go_program": "go-build:",
}


# Conformance tests whose verdict depends on the machine keeping a latency bound (a scheduled
# event at most ``schedule_bound`` late, an unscheduled one not held behind scheduled ones
# for 3 s, an event due in 1 s still waiting when the next one of its key arrives): make test
# runs them in its serial phase, where no other test competes for the 2 cores.
TIMING_TESTS = {
    "test_scheduled_events_wait_for_their_time",
    "test_scheduled_event_and_key_order",
    "test_more_scheduled_events_than_the_window_hold_back_no_other_key",
}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for engine in {ENGINE_FIXTURES[n] for n in names if n in ENGINE_FIXTURES}:
            item.add_marker(getattr(pytest.mark, engine))
        groups = {ONE_WORKER_FIXTURES[n] for n in names if n in ONE_WORKER_FIXTURES}
        for group in sorted(groups):
            name = f"{group}{item.path.stem}" if group.endswith(":") else group
            item.add_marker(pytest.mark.xdist_group(name))
        if getattr(item, "originalname", item.name) in TIMING_TESTS:
            item.add_marker(pytest.mark.timing)
        if getattr(config.option, "loadgroup", False):  # an xdist worker, --dist loadgroup
            _group_suffix(item)


def _group_suffix(item: pytest.Item) -> None:
    """--dist loadgroup sends the tests whose node ids end in the same ``@group`` to one
    worker. pytest-xdist 3.8 writes that suffix into ``Item._nodeid``, which pytest 9 no
    longer reads (its node id lives in ``Item._id``): without this, every group would be
    spread over the workers. (On pytest 8 xdist adds the suffix again: ``@g@g`` groups the
    same, xdist reading the part after the last ``@``.)"""
    groups = sorted(
        {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
    )
    if not groups:
        return
    nodeid = f"{item.nodeid}@{'_'.join(groups)}"
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9
    except ImportError:
        item._nodeid = nodeid  # type: ignore[attr-defined]
    else:
        item._id = NodeId.parse(nodeid)  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _service_faults_stay_in_their_phase(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping, killing or restarting a service fails (before it happens) in a test not
    marked for it: ``disruptive`` for a shared service, an ``xdist_group`` for an on-demand
    one (``fault_helpers.lifecycle_refusal``)."""
    guard_lifecycle(monkeypatch, Service, {m.name for m in request.node.iter_markers()})


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
