"""Process supervision: the :class:`Service` base class (spawn detached, wait ready, stop,
kill, restart, status) that every service definition subclasses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, ClassVar

from .config import (
    BIND_HOST,
    LOG_ROTATE_BYTES,
    LOOPBACK_HOSTS,
    START_TIMEOUTS,
    VERSIONS,
    ServiceError,
    cache_dir,
    port_open,
    run_root,
    say,
)
from .locks import file_lock
from .procs import alive, group_pids, is_loopback, listening_sockets, proc_start_ticks, rss_of

# --------------------------------------------------------------------------------------
# Service base class
# --------------------------------------------------------------------------------------


class Service:
    """One managed service. Instances are cached per name by :func:`get_service`."""

    name: ClassVar[str] = ""
    #: what is installed and which version/timeout entries apply (several services may run
    #: one product, e.g. the three nodes of the Kafka cluster); empty means ``name``
    product: ClassVar[str] = ""
    #: signal for a graceful stop (sent to the main pid; SIGKILL to the group after timeout)
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_timeout: ClassVar[float] = 60.0

    def __init__(self) -> None:
        self.run_dir = run_root() / self.name
        self.log_path = self.run_dir / f"{self.name}.log"
        self.pid_file = self.run_dir / "pid.json"
        self._proc: subprocess.Popen[bytes] | None = None

    # ---- to be provided by subclasses -------------------------------------------------
    @property
    def kind(self) -> str:
        """The installed product: ``product`` or, when empty, ``name``."""
        return self.product or self.name

    @property
    def version(self) -> str:
        return VERSIONS[self.kind]

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def host(self) -> str:
        raise NotImplementedError

    @property
    def ports(self) -> list[int]:
        """Every TCP port the service binds (checked free before start)."""
        raise NotImplementedError

    @property
    def install_dir(self) -> Path:
        return cache_dir() / self.kind / self.version

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    def is_installed(self) -> bool:
        return (self.install_dir / ".installed").is_file()

    def _install(self) -> None:
        raise NotImplementedError

    def _prepare(self, fresh: bool) -> None:
        """Write configs; wipe and initialise data when ``fresh``."""
        raise NotImplementedError

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        """argv, extra env, cwd, and the user to run as (None: the current user)."""
        raise NotImplementedError

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        """One readiness check against the configured endpoint; raise if not ready."""
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Post-start setup (e.g. create the database)."""

    # ---- generic behaviour --------------------------------------------------------------
    def _check_managed(self) -> None:
        if self.host not in LOOPBACK_HOSTS:
            raise ServiceError(
                f"{self.name}: endpoint {self.url} is not on loopback; these scripts manage "
                f"only services on {BIND_HOST}"
            )

    def install(self) -> None:
        """Download/build what the service needs into the cache (idempotent)."""
        with file_lock(cache_dir() / "locks" / f"install-{self.kind}.lock"):
            if self.is_installed():
                return
            t0 = time.monotonic()
            say(f"{self.name}: installing {self.version} into {self.install_dir}")
            self._install()
            (self.install_dir / ".installed").write_text(
                json.dumps({"version": self.version, "installed_at": time.time()}) + "\n"
            )
            say(f"{self.name}: installed in {time.monotonic() - t0:.1f}s")

    def _read_pid(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def pid(self) -> int | None:
        """Pid of the running service's main process, or None."""
        if self._proc is not None:
            self._proc.poll()  # reap our own child so that it does not linger as a zombie
        info = self._read_pid()
        if not info:
            return None
        pid = int(info["pid"])
        return pid if alive(pid, info.get("start_ticks")) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    def is_ready(self, timeout: float = 5.0, deep: bool = False) -> bool:
        try:
            self.probe(timeout=timeout, deep=deep)
        except (OSError, ValueError, ConnectionError):
            return False
        return True

    def _group(self) -> list[int]:
        pid = self.pid()
        if pid is None:
            return []
        return group_pids(pid) or [pid]

    def rss_bytes(self) -> int:
        """Resident memory of the service's whole process group."""
        return rss_of(self._group())

    def listening(self) -> list[tuple[str, int]]:
        return listening_sockets(self._group())

    def tail_log(self, n: int = 60) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                data = f.read()
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])

    def _fail(self, why: str) -> ServiceError:
        return ServiceError(
            f"{self.name}: {why}\n--- last lines of {self.log_path} ---\n{self.tail_log(60)}\n---"
        )

    def _kill_stale_group(self) -> None:
        info = self._read_pid()
        if not info:
            return
        pid, ticks = int(info["pid"]), int(info.get("start_ticks") or 0)
        if alive(pid, info.get("start_ticks")):
            return
        for p in group_pids(pid):
            t = proc_start_ticks(p)
            if t is not None and t >= ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _rotate_log(self) -> None:
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))

    def spawn(self, fresh: bool = True) -> bool:
        """Start the process detached unless it already runs; True when it was spawned."""
        self._check_managed()
        if self.is_running():
            return False
        self._kill_stale_group()
        busy = [p for p in self.ports if port_open(BIND_HOST, p)]
        if busy:
            if self.is_ready():
                say(f"{self.name}: {self.url} already answers (not started by these scripts)")
                return False
            raise ServiceError(
                f"{self.name}: port(s) {busy} on {BIND_HOST} are taken by another process; "
                f"stop it or point the HEXA_* variables elsewhere"
            )
        self.install()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._rotate_log()
        self._prepare(fresh)
        argv, extra_env, cwd, user = self._command()
        full_env = dict(os.environ)
        full_env.update(extra_env)
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user, group=user, extra_groups=[])
        with self.log_path.open("ab") as logf:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            logf.write(f"\n=== {stamp} start (fresh={fresh}): {' '.join(argv)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(
                argv,
                cwd=str(cwd),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **kwargs,
            )
        self._proc = proc
        info = {
            "pid": proc.pid,
            "start_ticks": proc_start_ticks(proc.pid),
            "started_at": time.time(),
            "argv": argv,
            "version": self.version,
        }
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info) + "\n")
        tmp.replace(self.pid_file)
        return True

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the readiness probe until it passes; raise ServiceError with the log tail."""
        timeout = timeout if timeout is not None else start_timeout(self.kind)
        deadline = time.monotonic() + timeout
        last = "no attempt yet"
        managed = self._read_pid() is not None
        while True:
            if managed and not self.is_running():
                raise self._fail("process exited before it became ready")
            try:
                self.probe(timeout=min(10.0, max(1.0, deadline - time.monotonic())))
            except (OSError, ValueError, ConnectionError) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                break
            if time.monotonic() >= deadline:
                still = (
                    f"; still running as pid {self.pid()}, `scripts/services down {self.name}`"
                    " stops it"
                    if managed
                    else ""
                )
                raise self._fail(f"not ready after {timeout:.0f}s (last probe: {last}){still}")
            time.sleep(0.3)
        self._after_ready()
        bad = [(a, p) for a, p in self.listening() if not is_loopback(a)]
        if bad:
            self.kill()
            raise self._fail(f"listened on non-loopback addresses {bad}; killed it")

    def start(self, fresh: bool = True, timeout: float | None = None) -> Service:
        """Install if needed, start detached and wait until it serves.

        Idempotent: when it already runs, this only waits for readiness (data is kept
        whatever ``fresh`` says). ``fresh=True`` wipes the data dir of a stopped service.
        """
        with file_lock(self.run_dir / "run.lock"):
            t0 = time.monotonic()
            spawned = self.spawn(fresh=fresh)
            self.wait_ready(timeout)
            if spawned:
                say(
                    f"{self.name}: ready at {self.url} in {time.monotonic() - t0:.1f}s "
                    f"(pid {self.pid()}, log {self.log_path})"
                )
        return self

    def _wait_dead(self, pid: int, ticks: int | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None:
                self._proc.poll()
            if not alive(pid, ticks):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _wait_ports_free(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while any(port_open(BIND_HOST, p, 0.2) for p in self.ports):
            if time.monotonic() >= deadline:
                say(f"{self.name}: warning: ports {self.ports} still open after stop")
                return
            time.sleep(0.1)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop (SIGTERM/SIGINT), SIGKILL for the group after ``timeout``."""
        timeout = timeout if timeout is not None else self.stop_timeout
        with file_lock(self.run_dir / "run.lock"):
            info = self._read_pid()
            pid = self.pid()
            if info is None or pid is None:
                self._kill_stale_group()
                return
            ticks = info.get("start_ticks")
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, self.stop_signal)
            if not self._wait_dead(pid, ticks, timeout):
                say(f"{self.name}: no exit after {timeout:.0f}s, sending SIGKILL")
            self._killpg(pid)
            self._wait_dead(pid, ticks, 10.0)
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            self._wait_ports_free()
            say(f"{self.name}: stopped in {time.monotonic() - t0:.1f}s")

    def _killpg(self, pgid: int) -> None:
        for p in group_pids(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash); data stays."""
        with file_lock(self.run_dir / "run.lock"):
            info = self._read_pid()
            pid = self.pid()
            if info is None or pid is None:
                self._kill_stale_group()
                return
            self._killpg(pid)
            self._wait_dead(pid, info.get("start_ticks"), 10.0)
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            self._wait_ports_free()

    def restart(self, keep_data: bool = True, timeout: float | None = None) -> Service:
        """Stop gracefully and start again (keeping data unless ``keep_data=False``)."""
        with file_lock(self.run_dir / "run.lock"):
            self.stop()
            return self.start(fresh=not keep_data, timeout=timeout)

    def status(self) -> dict[str, Any]:
        pid = self.pid()
        info = self._read_pid() or {}
        ready = self.is_ready(timeout=2.0)
        state = (
            "ready"
            if pid and ready
            else "starting?"
            if pid
            else ("external" if ready else "stopped")
        )
        return {
            "name": self.name,
            "state": state,
            "pid": pid,
            "url": self.url,
            "version": self.version,
            "installed": self.is_installed(),
            "rss_mb": round(self.rss_bytes() / 2**20, 1) if pid else None,
            "uptime_s": round(time.time() - float(info["started_at"]), 1) if pid else None,
            "listening": [f"{a}:{p}" for a, p in self.listening()] if pid else [],
            "log": str(self.log_path),
        }


def start_timeout(name: str) -> float:
    override = os.environ.get("HEXA_SERVICES_START_TIMEOUT")
    return float(override) if override else START_TIMEOUTS[name]


def wipe(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
