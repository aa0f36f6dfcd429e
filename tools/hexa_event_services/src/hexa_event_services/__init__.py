"""Real services on demand for hexa-event's tests: install, start, check, stop.

A dev-only package (not part of the ``hexa-event`` wheel), standard library only, so that
``scripts/services`` runs it before any virtualenv exists. Modules, one job each:

- ``config``: pinned versions, endpoints (``HEXA_*`` variables), cache dirs, small helpers;
- ``locks``: flock-based locks so that concurrent commands serialise;
- ``installers``: commands, apt, Maven (checksums checked), ``go install``;
- ``procs``: /proc helpers (liveness, process groups, RSS, listening sockets);
- ``probes``: wire-level readiness checks (Kafka, Pulsar, NATS, STAN, PostgreSQL);
- ``supervisor``: the :class:`Service` base class (spawn, wait ready, stop, kill, restart);
- ``definitions``: one module per service (kafka, pulsar, nats + stan, postgres);
- ``registry``: services by name, ``up`` for several at once;
- ``pytest_support``: ``require_service`` and friends for tests;
- ``cli``: the ``scripts/services`` command line.

Python: ``get_service(name)`` returns a :class:`Service`; ``require_service(name)`` is the
pytest helper (skip when absent, fail when ``CI=true``).
"""

from .config import (
    DEFAULT_ENDPOINTS,
    SERVICE_NAMES,
    VERSIONS,
    ServiceError,
    cache_dir,
    env,
    run_root,
)
from .probes import (
    PgError,
    kafka_probe,
    nats_probe,
    pb_decode,
    pb_field,
    pg_query,
    pulsar_probe,
    stan_probe,
)
from .pytest_support import on_demand, require_service, service_fixture, stop_all
from .registry import get_service, service_env, unique_name, up
from .supervisor import Service

__all__ = [
    "DEFAULT_ENDPOINTS",
    "SERVICE_NAMES",
    "VERSIONS",
    "PgError",
    "Service",
    "ServiceError",
    "cache_dir",
    "env",
    "get_service",
    "kafka_probe",
    "nats_probe",
    "on_demand",
    "pb_decode",
    "pb_field",
    "pg_query",
    "pulsar_probe",
    "require_service",
    "run_root",
    "service_env",
    "service_fixture",
    "stan_probe",
    "stop_all",
    "unique_name",
    "up",
]
