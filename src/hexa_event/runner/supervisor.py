"""Worker processes under a supervisor: ``hexa-event run --workers N`` and ``--reload``.

Each worker is ``python -m hexa_event.cli run TARGET`` in a process group of its own (so a
terminal's Ctrl-C reaches the supervisor only, which forwards it once); it imports the
target and calls its factory, so it connects on its own and joins the same groups as the
others. The supervisor:

- forwards SIGTERM/SIGINT to every worker (a second signal is forwarded again: the workers
  hurry), stops restarting, waits for them, and exits 0 when each stopped cleanly;
- restarts a worker that dies, after a back-off doubling from 0.5 s up to 10 s (reset once
  a worker ran ``min_uptime`` seconds);
- gives up when a worker died ``max_restarts`` times in a row within ``min_uptime`` of its
  start (a crash loop): stops the others and exits 1 saying so;
- does not restart a worker that exits with :data:`EXIT_CONFIG` (a configuration it cannot
  run with, e.g. ``memory://`` with several workers): stops the others and exits 2;
- with ``reload_dirs``, restarts the workers when a ``.py`` file under them changes
  (watchfiles, the ``[serve]`` extra); when it cannot watch them (watchfiles missing, a
  directory that does not exist), stops the workers and exits 2 saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from ..errors import ConfigurationError, install_hint

logger = logging.getLogger(__name__)

_EXIT_CONFIG = 78
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 10.0
_MAX_PORT = 65535


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    quick_failures: int = 0
    restarts: int = 0
    reloading: bool = False


class Supervisor:
    """Runs ``workers`` worker processes of ``target`` ("MODULE:ATTR") until stopped."""

    def __init__(
        self,
        target: str,
        *,
        workers: int,
        http_port: int | None = None,
        http_host: str = "0.0.0.0",
        app_dir: str | None = ".",
        max_restarts: int = 5,
        min_uptime: float = 10.0,
        reload_dirs: list[str] | None = None,
        gc_tuning: bool = True,
    ) -> None:
        if http_port is not None and http_port + workers - 1 > _MAX_PORT:
            raise ConfigurationError(
                f"--http-port {http_port} with --workers {workers}: worker i serves on "
                f"PORT + i, past {_MAX_PORT} for the last one; give a port up to "
                f"{_MAX_PORT - workers + 1}"
            )
        self.target = target
        self.gc_tuning = gc_tuning
        self.workers = [_Worker(i) for i in range(workers)]
        self.http_port = http_port
        self.http_host = http_host
        self.app_dir = app_dir
        self.max_restarts = max_restarts
        self.min_uptime = min_uptime
        self.reload_dirs = reload_dirs
        self.stopping = False
        self._signals = 0
        self._stopped = asyncio.Event()
        self._failure = ""
        self._exit = 0

    def _argv(self, worker: _Worker) -> list[str]:
        argv = [sys.executable, "-m", "hexa_event.cli", "run", self.target]
        if self.app_dir is not None:
            argv += ["--app-dir", self.app_dir]
        if self.http_port is not None:
            argv += ["--http-port", str(self.http_port + worker.index)]
            argv += ["--http-host", self.http_host]
        if not self.gc_tuning:
            argv.append("--no-gc-tuning")
        return argv

    async def _spawn(self, worker: _Worker) -> None:
        env = dict(os.environ)
        env["HEXA_EVENT_WORKERS"] = str(len(self.workers))
        env["HEXA_EVENT_WORKER_INDEX"] = str(worker.index)
        env["HEXA_EVENT_SUPERVISOR_PID"] = str(os.getpid())
        worker.process = await asyncio.create_subprocess_exec(
            *self._argv(worker), env=env, process_group=0
        )
        worker.started_at = time.monotonic()
        logger.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)

    def stop(self) -> None:
        """Forward a stop to every worker (a second call makes them hurry)."""
        self._signals += 1
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        self._stopped.set()

    def _give_up(self, message: str, code: int) -> None:
        if not self._failure:
            self._failure = message
            self._exit = code
            logger.error("%s", message)
        if not self.stopping:
            self.stopping = True
            self._signal_all(signal.SIGTERM)
            self._stopped.set()

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker slot: restart it with back-off until stopping or giving up."""
        backoff = _FIRST_BACKOFF
        while not self.stopping:
            await self._spawn(worker)
            assert worker.process is not None
            if self.stopping:  # the stop came while it was being started: it missed the signal
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
            code = await worker.process.wait()
            if self.stopping:
                return
            if worker.reloading:
                worker.reloading = False
                worker.quick_failures = 0
                backoff = _FIRST_BACKOFF
                continue
            if code == _EXIT_CONFIG:
                self._give_up(
                    f"worker {worker.index} refused its configuration (see its error above); "
                    "not restarting it",
                    2,
                )
                return
            uptime = time.monotonic() - worker.started_at
            if uptime >= self.min_uptime:
                worker.quick_failures = 0
                backoff = _FIRST_BACKOFF
            worker.quick_failures += 1
            if worker.quick_failures > self.max_restarts:
                self._give_up(
                    f"worker {worker.index} keeps crashing: it died {worker.quick_failures} "
                    f"times in a row within {self.min_uptime:.0f}s of starting (last exit "
                    f"status {code}); giving up. Its error is in the log above.",
                    1,
                )
                return
            worker.restarts += 1
            logger.warning(
                "worker %d (pid %d) died with status %s after %.1fs; restarting in %.1fs",
                worker.index,
                worker.process.pid,
                code,
                uptime,
                backoff,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopped.wait()
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _reload(self) -> None:
        """Restart the workers on changes; stop them all (exit 2) if watching fails."""
        assert self.reload_dirs is not None
        try:
            await self._watch(self.reload_dirs)
        except Exception as exc:
            why = (
                str(exc)
                if isinstance(exc, ConfigurationError)
                else (
                    f"--reload cannot watch {', '.join(self.reload_dirs)} ({type(exc).__name__}: "
                    f"{exc}): give existing directories with --reload-dir or --app-dir"
                )
            )
            self._give_up(f"{why}; stopping the workers", 2)

    async def _watch(self, dirs: list[str]) -> None:
        try:
            from watchfiles import PythonFilter, awatch
        except ModuleNotFoundError as exc:
            raise ConfigurationError(f"--reload needs watchfiles: {install_hint('serve')}") from exc
        async for changes in awatch(*dirs, watch_filter=PythonFilter(), stop_event=self._stopped):
            names = sorted({path for _, path in changes})
            logger.info("changed: %s; restarting the workers", ", ".join(names[:5]))
            for worker in self.workers:
                worker.reloading = True
            self._signal_all(signal.SIGTERM)

    async def run(self) -> int:
        """Supervise until stopped; the exit status (0 clean, 1 crash loop, 2 refused)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        reloader = None
        try:
            if self.reload_dirs is not None:
                reloader = asyncio.create_task(self._reload(), name="hexa-event:reload")
            slots = [asyncio.create_task(self._keep(w)) for w in self.workers]
            await asyncio.gather(*slots)
            for worker in self.workers:  # stopping: the processes still exiting
                if worker.process is not None:
                    await worker.process.wait()
        finally:
            if reloader is not None:
                self._stopped.set()
                reloader.cancel()
                with contextlib.suppress(BaseException):
                    await reloader
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        if self._failure:
            return self._exit
        # A worker our own forwarded SIGTERM ended (still importing its target, or exiting
        # after its drain when a second signal came) stopped as asked: not an error.
        clean = (0, None, -signal.SIGTERM)
        bad = [
            (w.index, w.process.returncode)
            for w in self.workers
            if w.process is not None and w.process.returncode not in clean
        ]
        if bad:
            logger.error("workers stopped with errors: %s", bad)
            return 1
        logger.info("all %d workers stopped", len(self.workers))
        return 0
