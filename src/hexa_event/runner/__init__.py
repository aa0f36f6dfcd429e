"""Run receivers, outbox relays and cleaners as a service: ``hexa-event run MODULE:ATTR``.

:func:`serve` runs a target in this process until SIGTERM or SIGINT (graceful drain; a
second signal hurries it), optionally with health probes and metrics on an HTTP port.
:func:`run` is the blocking entry point of the command line: one process, ``workers``
processes under a supervisor, or a supervised process restarted on source changes
(``reload``). See docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError
from .service import Service
from .targets import load_target

__all__ = ["EXIT_CONFIG", "Service", "load_target", "run", "serve"]

logger = logging.getLogger(__name__)

EXIT_CONFIG = 78
"""A worker's exit status for a configuration it cannot run with (not restarted)."""

WORKERS_ENV = "HEXA_EVENT_WORKERS"
SUPERVISOR_ENV = "HEXA_EVENT_SUPERVISOR_PID"


async def serve(
    target: Any,
    *,
    http_port: int | None = None,
    http_host: str = "0.0.0.0",
    handle_signals: bool = True,
    on_started: Callable[[], None] | None = None,
    gc_tuning: bool = True,
) -> None:
    """Run ``target`` until SIGTERM/SIGINT (or ``service.stop()``), then drain and close.

    ``target``: a receiver, relay, cleaner, a list of them, a factory (sync or async, or an
    async generator) building them, or ``"MODULE:ATTR"`` naming one; or a :class:`Service`
    of one, whose ``stop()`` stops it as a signal would. The first signal stops
    fetching and drains within each receiver's ``drain_timeout``; a second one hurries.
    ``http_port`` serves ``/livez``, ``/readyz`` and ``/metrics`` (the ``[serve]`` extra;
    ``http_host`` 0.0.0.0 by default, so probes reach it from outside a container).
    ``gc_tuning``: once started, freeze the heap (``gc.freeze()``) until stopped, so the
    garbage collector's full collections skip it (False here or on the given
    :class:`Service` turns it off; :mod:`hexa_event.runner.collector`; docs/deploy.md).
    Raises what made a component fail, after closing everything.
    """
    if isinstance(target, str):
        target = load_target(target)
    service = target if isinstance(target, Service) else Service(target, gc_tuning=gc_tuning)
    service.gc_tuning = service.gc_tuning and gc_tuning
    probes = None
    if http_port is not None:
        from .probes import ProbeServer, enable_prometheus

        enable_prometheus()
        probes = ProbeServer(service, host=http_host, port=http_port)
        await probes.start()
    restore = _install_signals(service) if handle_signals else _nothing
    watchdog = _watch_supervisor(service)
    try:
        await service.run(on_started=lambda: _started(service, on_started))
    finally:
        restore()
        if watchdog is not None:
            watchdog.cancel()
        if probes is not None:
            await probes.close()


def _started(service: Service, on_started: Callable[[], None] | None) -> None:
    workers = int(os.environ.get(WORKERS_ENV, "1") or 1)
    components = service.components
    if workers > 1 and components is not None and "memory" in components.engines:
        raise ConfigurationError(
            f"--workers {workers} with a memory:// driver: each worker process would have "
            "its own private memory log, so events emitted in one never reach another; use "
            "--workers 1, or a shared engine (sqlite:///file.db, postgresql://, kafka://...)"
        )
    if on_started is not None:
        on_started()


def _nothing() -> None:
    return None


def _install_signals(service: Service) -> Callable[[], None]:
    """First SIGTERM/SIGINT: graceful stop; the next: hurry. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return _nothing
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(sig: signal.Signals) -> None:
        if service.stopping:
            logger.warning("%s again: stopping faster (handlers cancelled)", sig.name)
            service.stop(force=True)
        else:
            logger.info("%s: stopping (draining handlers)", sig.name)
            service.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)

    def restore() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return restore


def _watch_supervisor(service: Service) -> asyncio.Task[None] | None:
    """In a worker: stop when the supervisor is gone (killed without forwarding a signal)."""
    pid = os.environ.get(SUPERVISOR_ENV)
    if not pid:
        return None

    async def watch() -> None:
        while os.getppid() == int(pid):  # noqa: ASYNC110 (no event tells a parent died)
            await asyncio.sleep(1.0)
        logger.error("the supervisor (pid %s) is gone; stopping", pid)
        service.stop()

    return asyncio.create_task(watch(), name="hexa-event:supervisor-watch")


def run(
    target: Any,
    *,
    workers: int = 1,
    reload: bool = False,
    reload_dirs: list[str] | None = None,
    http_port: int | None = None,
    http_host: str = "0.0.0.0",
    app_dir: str | None = ".",
    max_restarts: int = 5,
    gc_tuning: bool = True,
) -> int:
    """Run ``target`` until stopped; the exit status (0: stopped cleanly).

    ``workers > 1`` or ``reload`` start worker processes under a supervisor, which needs
    ``target`` as ``"MODULE:ATTR"`` (each process imports it and calls the factory). With
    workers, worker ``i`` serves its probes on ``http_port + i``. ``gc_tuning=False`` leaves
    the garbage collector's settings alone (see :func:`serve`).
    """
    if workers < 1:
        raise ConfigurationError(f"workers must be at least 1, got {workers}")
    if workers > 1 or reload:
        if not isinstance(target, str):
            raise ConfigurationError(
                "worker processes and --reload import the target in each process: give it "
                "as 'MODULE:ATTR' (a factory there builds each process's receivers)"
            )
        from .supervisor import Supervisor

        supervisor = Supervisor(
            target,
            workers=workers,
            http_port=http_port,
            http_host=http_host,
            app_dir=app_dir,
            max_restarts=max_restarts,
            gc_tuning=gc_tuning,
            reload_dirs=(reload_dirs or [app_dir or "."]) if reload else None,
        )
        return asyncio.run(supervisor.run())
    try:
        if isinstance(target, str):
            target = load_target(target, app_dir=app_dir)
        asyncio.run(serve(target, http_port=http_port, http_host=http_host, gc_tuning=gc_tuning))
    except ConfigurationError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG if os.environ.get(SUPERVISOR_ENV) else 2
    except Exception as exc:
        logger.error("the service failed: %s", exc, exc_info=True)
        return 1
    return 0
