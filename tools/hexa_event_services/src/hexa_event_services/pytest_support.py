"""Helpers for tests: ``require_service`` (skip when absent, fail under CI) and friends."""

from __future__ import annotations

import os
from collections.abc import Callable

from .config import (
    LOOPBACK_HOSTS,
    ServiceError,
    is_ci,
)
from .registry import get_service
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


def service_fixture(name: str, scope: str = "session") -> Callable[[], Service]:
    """A pytest fixture returning ``require_service(name)``; assign it in a conftest."""
    import pytest

    def _fixture() -> Service:
        return require_service(name)

    _fixture.__name__ = f"{name}_service"
    return pytest.fixture(scope=scope, name=f"{name}_service")(_fixture)  # type: ignore[call-overload,no-any-return]
