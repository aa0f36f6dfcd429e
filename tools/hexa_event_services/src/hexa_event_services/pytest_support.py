"""Helpers for tests: ``require_service`` (skip when absent, fail under CI) and friends."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .config import (
    LOOPBACK_HOSTS,
    ServiceError,
    is_ci,
)
from .registry import down, get_service, names_of, up
from .supervisor import Service


def require_service(name: str, timeout: float = 5.0, autostart: bool | None = None) -> Service:
    """For tests: the service if it answers, else ``pytest.skip`` (``pytest.fail`` in CI).

    With ``HEXA_SERVICES_AUTOSTART=1`` (or ``autostart=True``) a missing service on loopback
    is installed and started first.
    """
    import pytest  # only needed by tests; keeps this module stdlib-only at import time

    svc = get_service(name)
    try:
        svc.probe(timeout=timeout, deep=False)
        return svc
    except (OSError, ValueError, ConnectionError) as e:
        reason = f"{type(e).__name__}: {e}"
    if autostart is None:
        autostart = os.environ.get("HEXA_SERVICES_AUTOSTART", "") in {"1", "true", "yes"}
    if autostart and svc.host in LOOPBACK_HOSTS:
        try:
            return svc.start(fresh=False)
        except ServiceError as e:
            reason = f"autostart failed: {e}"
    msg = (
        f"{name} is not reachable at {svc.url} ({reason}); "
        f"start it with `scripts/services up {name}`"
    )
    if is_ci():
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)
    raise AssertionError("unreachable")  # pytest.skip raises


def on_demand(group: str, timeout: float = 5.0) -> tuple[list[Service], bool]:
    """For tests of an on-demand group (e.g. ``kafka-cluster``): its services, started if
    any of them does not answer (on loopback), and whether this call started them.

    The caller stops them again when it started them (``stop_all``), so an on-demand
    service costs the machine nothing outside its tests. Skips (fails under ``CI=true``)
    when they cannot be started.
    """
    import pytest

    services = [get_service(n) for n in names_of([group])]
    if all(s.is_ready(timeout=timeout) for s in services):
        return services, False
    fresh = not any(s.is_running() for s in services)  # a clean start when none runs
    try:
        up([group], fresh=fresh)
    except ServiceError as e:
        msg = f"{group} could not be started ({e}); try `scripts/services up {group}`"
        if is_ci():
            pytest.fail(f"CI=true and {msg}", pytrace=False)
        pytest.skip(msg)
    return services, True


def stop_all(services: Sequence[Service]) -> None:
    """Stop ``services`` gracefully, all at the same time."""
    down([s.name for s in services])


def service_fixture(name: str, scope: str = "session") -> Callable[[], Service]:
    """A pytest fixture returning ``require_service(name)``; assign it in a conftest."""
    import pytest

    def _fixture() -> Service:
        return require_service(name)

    _fixture.__name__ = f"{name}_service"
    return pytest.fixture(scope=scope, name=f"{name}_service")(_fixture)  # type: ignore[call-overload,no-any-return]
