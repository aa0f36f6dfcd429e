"""The registry of services by name, and ``up`` for several at once."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
import uuid
from collections.abc import Sequence

from .config import (
    DEFAULT_ENDPOINTS,
    GROUPS,
    ON_DEMAND_NAMES,
    SERVICE_NAMES,
    ServiceError,
    env,
    say,
)
from .definitions.kafka import Kafka
from .definitions.kafka_cluster import NODE_CLASSES
from .definitions.kafka_secure import KafkaSecure
from .definitions.nats import Nats, Stan
from .definitions.nats_cluster import NODE_CLASSES as NATS_NODE_CLASSES
from .definitions.nats_cluster import NatsSolo
from .definitions.postgres import Postgres
from .definitions.postgres_auth import PostgresAuth
from .definitions.pulsar import Pulsar
from .definitions.soak import KafkaSoak, NatsSoak
from .locks import file_lock
from .supervisor import Service

_CLASSES: dict[str, type[Service]] = {
    "kafka": Kafka,
    "pulsar": Pulsar,
    "nats": Nats,
    "stan": Stan,
    "postgres": Postgres,
    **{cls.name: cls for cls in NODE_CLASSES},
    "kafka-secure": KafkaSecure,
    "postgres-auth": PostgresAuth,
    **{cls.name: cls for cls in NATS_NODE_CLASSES},
    "nats-solo": NatsSolo,
    "kafka-soak": KafkaSoak,
    "nats-soak": NatsSoak,
}
ALL_NAMES: tuple[str, ...] = SERVICE_NAMES + ON_DEMAND_NAMES
"""Every service in canonical order (commands take locks in it, so two never cross)."""
_instances: dict[str, Service] = {}


def get_service(name: str) -> Service:
    """The (cached) :class:`Service` for ``name`` (one of ``ALL_NAMES``)."""
    if name not in _CLASSES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(ALL_NAMES)}")
    if name not in _instances:
        _instances[name] = _CLASSES[name]()
    return _instances[name]


def unique_name(prefix: str) -> str:
    """``prefix-<12 hex>``: topic, stream, group or table names that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def service_env() -> dict[str, str]:
    """The endpoint variables the tests read, with their effective values."""
    return {k: env(k) for k in DEFAULT_ENDPOINTS}


def names_of(args: Sequence[str]) -> list[str]:
    """Service names for command arguments: groups expanded, canonical order; none: shared."""
    if not args:
        return list(SERVICE_NAMES)
    wanted = {n for a in args for n in GROUPS.get(a, (a,))}
    unknown = sorted(wanted - set(_CLASSES))
    if unknown:
        known = ", ".join([*ALL_NAMES, *GROUPS])
        raise ServiceError(f"unknown service(s) {unknown}; known: {known}")
    return [n for n in ALL_NAMES if n in wanted]  # canonical order: locks never cross


def up(names: Sequence[str], fresh: bool = True, timeout: float | None = None) -> None:
    """Install all, spawn all (so JVM start-ups overlap), then wait for each."""
    services = [get_service(n) for n in names_of(names)]
    for s in services:
        s._check_managed()
    # Installs overlap: downloads are network-bound, the STAN build is CPU-bound.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
        errors = [f.exception() for f in [pool.submit(s.install) for s in services]]
    failed = [str(e) for e in errors if e is not None]
    if failed:
        raise ServiceError("install failed:\n" + "\n\n".join(failed))
    with contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        spawned = {}
        for s in services:
            stack.enter_context(file_lock(s.run_dir / "run.lock"))
            spawned[s.name] = s.spawn(fresh=fresh)
        failures = []
        for s in services:
            try:
                s.wait_ready(timeout)
            except ServiceError as e:
                failures.append(str(e))
                continue
            what = "ready" if spawned[s.name] else "already running"
            say(
                f"{s.name}: {what} at {s.url} after {time.monotonic() - t0:.1f}s "
                f"(pid {s.pid()}, rss {s.rss_bytes() / 2**20:.0f} MiB)"
            )
        if failures:
            raise ServiceError("\n\n".join(failures))


def down(names: Sequence[str], kill: bool = False) -> None:
    """Stop services (SIGKILL at once with ``kill``), all at the same time.

    In parallel so that the nodes of a group leave together: the last node of a KRaft
    cluster stopped alone would wait for a quorum that has already gone.
    """
    services = [get_service(n) for n in reversed(names_of(names))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(services) or 1) as pool:
        futures = [pool.submit(s.kill if kill else s.stop) for s in services]
    failed = [str(f.exception()) for f in futures if f.exception() is not None]
    if failed:
        raise ServiceError("stop failed:\n" + "\n\n".join(failed))
