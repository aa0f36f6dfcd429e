"""What the runner runs: load ``MODULE:ATTR`` and turn a target into components.

A target is a :class:`~hexa_event.receiver.Receiver`; an object with ``run()`` and
``stop()`` (an outbox relay, an outbox or inbox cleaner); a list or tuple of those; or a
factory that builds them: a callable (sync or async) returning one of the above, or an
async generator function that yields one and cleans up after (what worker processes need:
each process calls the factory and connects on its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..driver import Driver
from ..errors import ConfigurationError, install_hint, missing_extra
from ..receiver import Receiver

logger = logging.getLogger(__name__)


def load_target(spec: str, *, app_dir: str | None = ".") -> Any:
    """The object named by ``MODULE:ATTR`` (``ATTR`` may be dotted); ``app_dir`` goes first
    on ``sys.path`` so a module beside the working directory imports."""
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigurationError(
            f"the target must be MODULE:ATTR (e.g. billing.service:receiver), got {spec!r}"
        )
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigurationError(
                f"cannot import {module_name!r} for target {spec!r}: run from the directory "
                "that holds it (or give --app-dir)"
            ) from exc
        extra = missing_extra(exc)
        fix = install_hint(extra) if extra else f"install {missing!r} in this environment"
        raise ConfigurationError(
            f"importing {module_name!r} for target {spec!r} failed: it imports {missing!r}, "
            f"which is not installed: {fix}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr_path!r} (target {spec!r})"
            ) from None
    return obj


@dataclass
class Components:
    """What a target built: receivers, and loops run with ``run()``/``stop()``."""

    receivers: list[Receiver] = field(default_factory=list)
    loops: list[Any] = field(default_factory=list)
    drivers: list[Driver] = field(default_factory=list)
    """Connections named in the target and the receivers' drivers: closed last."""

    @property
    def engines(self) -> set[str]:
        """The engine names of the receivers' drivers (``memory``, ``sql``, ``kafka``...)."""
        return {r.driver.features.name for r in self.receivers}


def _is_loop(obj: object) -> bool:
    return callable(getattr(obj, "run", None)) and callable(getattr(obj, "stop", None))


def _collect(obj: object, into: Components, spec: object) -> None:
    if isinstance(obj, Receiver):
        into.receivers.append(obj)
    elif isinstance(obj, Driver):
        into.drivers.append(obj)
    elif _is_loop(obj):
        into.loops.append(obj)
    elif isinstance(obj, list | tuple):
        for item in obj:
            _collect(item, into, spec)
    else:
        raise ConfigurationError(
            f"the target {spec!r} gave {type(obj).__name__}: give a Receiver, an OutboxRelay "
            "or cleaner (anything with run() and stop()), a list of them, or a factory "
            "returning them"
        )


def _is_target(obj: object) -> bool:
    return isinstance(obj, Receiver | Driver | list | tuple) or _is_loop(obj)


@contextlib.asynccontextmanager
async def open_components(target: Any) -> AsyncIterator[Components]:
    """Build the components of ``target`` (calling a factory), yield them, then close what
    a factory's generator holds. Does not start or close the components themselves."""
    spec = target
    generator: Any = None
    if not _is_target(target) and callable(target):
        if inspect.isasyncgenfunction(target):
            generator = target()
            target = await generator.__anext__()
        else:
            target = target()
            if inspect.isawaitable(target):
                target = await target
    try:  # a factory's generator cleans up also when what it yielded is refused
        components = Components()
        _collect(target, components, spec)
        if not components.receivers and not components.loops:
            raise ConfigurationError(f"the target {spec!r} holds no receiver, relay or cleaner")
        for receiver in components.receivers:
            if all(receiver.driver is not d for d in components.drivers):
                components.drivers.append(receiver.driver)
        yield components
    finally:
        if generator is not None:
            with contextlib.suppress(StopAsyncIteration):
                await generator.__anext__()


async def close_drivers(drivers: Iterable[Driver]) -> None:
    """Close each driver once; a failure is logged, never raised (it is the last step)."""
    seen: list[Driver] = []
    for driver in drivers:
        inner = getattr(driver, "driver", driver)
        if any(inner is s for s in seen):
            continue
        seen.append(inner)
        try:
            await asyncio.shield(driver.close())
        except Exception:
            logger.exception("closing driver %r failed", driver)
