"""PostgreSQL: Debian's server binaries, our own cluster, trust auth."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..config import (
    BIND_HOST,
    VERSIONS,
    ServiceError,
    cache_dir,
    env,
    say,
)
from ..installers import (
    apt_install,
    run_command,
)
from ..locks import file_lock
from ..probes import pg_query
from ..supervisor import Service, start_timeout, wipe

# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


class Postgres(Service):
    name = "postgres"
    product = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for clients to leave
    stop_timeout = 30.0

    @property
    def url(self) -> str:
        return env("HEXA_POSTGRES_URL")

    @property
    def admin_url(self) -> str:
        """The URL the harness itself connects with (probe, database creation): trust auth."""
        return self.url

    @property
    def _parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.url)

    @property
    def host(self) -> str:
        return self._parts.hostname or BIND_HOST

    @property
    def ports(self) -> list[int]:
        return [self._parts.port or 5432]

    @property
    def dbname(self) -> str:
        return urllib.parse.unquote(self._parts.path.lstrip("/")) or "hexa_event"

    @property
    def superuser(self) -> str:
        return urllib.parse.unquote(urllib.parse.urlsplit(self.admin_url).username or "postgres")

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def _os_user(self) -> str | None:
        """PostgreSQL refuses to run as root: then it runs as the `postgres` OS user."""
        return "postgres" if self._as_root else None

    @property
    def pg_base(self) -> Path:
        """Data and socket dirs; as root outside /root (mode 700), which `postgres` can't enter."""
        override = os.environ.get("HEXA_POSTGRES_DIR") if self.name == "postgres" else None
        if override:
            return Path(override)
        if self._as_root:
            return Path("/var/tmp/hexa-event") / self.name
        return self.run_dir

    @property
    def data_dir(self) -> Path:
        return self.pg_base / "data"

    @property
    def version(self) -> str:
        return VERSIONS["postgres"]

    def bindir(self) -> Path | None:
        base = Path("/usr/lib/postgresql")
        pinned = base / self.version / "bin"
        if (pinned / "postgres").is_file():
            return pinned
        found = sorted(
            (p for p in base.glob("*/bin") if (p / "postgres").is_file()),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        )
        if found:
            return found[-1]
        pg_ctl = shutil.which("pg_ctl")
        return Path(pg_ctl).resolve().parent if pg_ctl else None

    def is_installed(self) -> bool:
        b = self.bindir()
        return b is not None and (b / "initdb").is_file()

    def install(self) -> None:
        with file_lock(cache_dir() / "locks" / "install-postgres.lock"):
            if self.is_installed():
                return
            t0 = time.monotonic()
            try:
                apt_install(f"postgresql-{self.version}")
            except ServiceError:
                apt_install("postgresql")
            # Debian's package creates and may start a cluster "main" on 5432: stop it, ours
            # runs from its own data dir.
            with contextlib.suppress(ServiceError, OSError):
                for line in run_command(["pg_lsclusters", "-h"]).splitlines():
                    cols = line.split()
                    if len(cols) >= 4 and cols[3] == "online":
                        run_command(["pg_ctlcluster", cols[0], cols[1], "stop"])
            if not self.is_installed():
                raise ServiceError("postgres: apt-get install did not provide initdb/postgres")
            say(f"postgres: installed in {time.monotonic() - t0:.1f}s")

    def _prepare(self, fresh: bool) -> None:
        bindir = self.bindir()
        assert bindir is not None
        user = self._os_user
        sock = self.pg_base / "sock"
        if fresh:
            wipe(self.data_dir)
        for d in (self.pg_base, sock):
            d.mkdir(parents=True, exist_ok=True)
            if user is not None:
                shutil.chown(d, user, user)
                d.chmod(0o700)
        with contextlib.suppress(OSError):
            link = self.run_dir / "data"
            if self.data_dir != link:
                if link.is_symlink() or link.exists():
                    wipe(link)
                link.symlink_to(self.data_dir)
        if not (self.data_dir / "PG_VERSION").is_file():
            run_command(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                user=user,
                cwd=Path("/"),
                log=None,
            )
            self._configure(self.data_dir)

    def _configure(self, data_dir: Path) -> None:
        """After initdb: change the new cluster's configuration files (hook)."""

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        bindir = self.bindir()
        assert bindir is not None
        settings = {
            "listen_addresses": BIND_HOST,
            "port": str(self.ports[0]),
            "unix_socket_directories": str(self.pg_base / "sock"),
            "max_connections": "200",
            "shared_buffers": "128MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "max_wal_senders": "0",
            "wal_level": "minimal",
        }
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        for k, v in settings.items():
            argv += ["-c", f"{k}={v}"]
        return argv, {}, Path("/"), self._os_user

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        pg_query(self.admin_url, "select 1", timeout)  # the test database itself, trust auth

    def wait_ready(self, timeout: float | None = None) -> None:
        timeout = timeout if timeout is not None else start_timeout(self.kind)
        deadline = time.monotonic() + timeout
        while True:
            try:
                pg_query(self.admin_url, "select 1", 2.0, dbname="postgres")
                break
            except (OSError, ConnectionError) as e:
                if self._read_pid() is not None and not self.is_running():
                    raise self._fail("process exited before it became ready") from e
                if time.monotonic() >= deadline:
                    raise self._fail(f"not ready after {timeout:.0f}s ({e})") from e
                time.sleep(0.2)
        self._after_ready()
        super().wait_ready(max(1.0, deadline - time.monotonic()))

    def _after_ready(self) -> None:
        rows = pg_query(
            self.admin_url,
            "select 1 from pg_database where datname = '" + self.dbname.replace("'", "''") + "'",
            dbname="postgres",
        )
        if not rows:
            pg_query(
                self.admin_url,
                'create database "' + self.dbname.replace('"', '""') + '"',
                dbname="postgres",
            )
