"""Wire-level readiness probes for each service, without client libraries."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Collection
from typing import Any

from .config import (
    BIND_HOST,
    split_hostport,
)

# --------------------------------------------------------------------------------------
# Wire-level readiness probes (no client libraries)
# --------------------------------------------------------------------------------------


def recv_exact(sock: socket.socket, n: int) -> bytes:
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
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    resp = recv_exact(sock, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise ConnectionError("kafka: correlation id mismatch")
    return resp[4:]


def kafka_probe(
    bootstrap: str, timeout: float = 5.0, expect_nodes: Collection[int] = ()
) -> list[int]:
    """ApiVersions, then Metadata: ready when the broker lists itself (it is unfenced).

    Returns the node ids the Metadata answer lists; with ``expect_nodes``, each of them
    must be among those (a cluster node is ready when it is registered and unfenced).
    """
    host, port = split_hostport(bootstrap, 9092)
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
            return []  # no non-flexible Metadata version to speak; ApiVersions answered
        body = struct.pack(">ib", -1, 0)  # all topics, no auto-creation
        resp = _kafka_call(sock, 3, version, 2, body)
        off = 4  # throttle_time_ms
        (brokers,) = struct.unpack(">i", resp[off : off + 4])
        off += 4
        nodes = []
        for _ in range(max(0, brokers)):
            (node_id, host_len) = struct.unpack(">ih", resp[off : off + 6])
            off += 6 + host_len + 4  # host, port
            (rack_len,) = struct.unpack(">h", resp[off : off + 2])
            off += 2 + max(0, rack_len)
            nodes.append(node_id)
        if not nodes:
            raise ConnectionError("kafka: no broker registered yet")
        missing = sorted(set(expect_nodes) - set(nodes))
        if missing:
            raise ConnectionError(f"kafka: node(s) {missing} not registered yet (have {nodes})")
        return sorted(nodes)


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
        host, port = split_hostport(url, 4222)
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
            kind = recv_exact(sock, 1)
            (n,) = struct.unpack(">i", recv_exact(sock, 4))
            return kind, recv_exact(sock, n - 4)

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
