"""Typed options of the NATS Streaming driver, validated at construction: ``StanOptions``
(the connection, one STAN session per driver) and ``StanSubscriptionOptions`` (what one
subscription may override). Credentials never appear in reprs, logs or errors.
"""

from __future__ import annotations

import inspect
import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nats.aio.client import Client as NatsClient

from ...errors import ConfigurationError
from ...numbers import check_number
from ..kit import options as kit

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOKEN_RE = re.compile(r"^[^\s*>.]+$")
_OWNED_NATS_KEYS = {
    "servers": "give the servers in the URL or StanOptions.servers",
    "max_reconnect_attempts": "the driver reconnects forever (-1), as stan.go does",
    "reconnected_cb": "the driver needs it to resend unacknowledged publishes",
    "disconnected_cb": "the driver needs it to pause publishing",
    "closed_cb": "the driver needs it to report a closed connection",
}

_ID_HINTS = {
    "cluster_id": "the streaming server's --cluster_id (letters, digits, '-' and '_'), e.g. "
    "stan://127.0.0.1:4223?cluster_id=test-cluster",
    "client_id": "STAN accepts only letters, digits, '-' and '_' (leave it unset for a unique one)",
}

SubscriptionKind = Literal["durable_queue", "queue", "durable", "plain"]
StartAt = Literal["first", "new_only", "last_received"]

_SKIPS_VALIDATION = "skip_subject_validation" in inspect.signature(NatsClient.connect).parameters
"""Whether this nats-py can skip its client-side subject checks (newer versions)."""


def check_channel(channel: object) -> str:
    """``channel`` if STAN accepts it as a channel name, else ConfigurationError."""
    if not isinstance(channel, str) or not channel:
        raise ConfigurationError(f"a STAN channel must be a non-empty string, got {channel!r}")
    tokens = channel.split(".")
    if not all(_TOKEN_RE.match(token) for token in tokens) or "/" in channel:
        raise ConfigurationError(
            f"STAN channel {channel!r} is not a valid name: use dot-separated tokens without "
            "spaces, '*', '>' or '/' (STAN has no wildcard channels)"
        )
    return channel


def unique_client_id() -> str:
    """``hexa-<host>-<pid>-<random>``: a client id no other process uses."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"
    return f"hexa-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True, repr=False)
class StanOptions(kit.DriverOptions):
    """How the driver talks to a NATS Streaming server; every field is described in
    docs/engines/stan.md#connecting-and-options.

    URL: ``stan://[user:password@]host:port[,host:port][/cluster_id][?cluster_id=...]``,
    query options are fields; the servers become ``nats://host:port`` (``tls://`` for
    ``stan+tls://``). ``nats_options`` go unchanged to ``nats.connect``.
    """

    engine = "STAN"
    example = "stan://127.0.0.1:4223?cluster_id=test-cluster"
    query_exclude = ("password", "token", "nats_options")
    client_hint = "Pass nats-py connection settings in nats_options={...}"
    masked_fields = ("password", "token")
    url_fields = ("servers", "monitor_url")

    cluster_id: str
    servers: str = "nats://127.0.0.1:4222"
    client_id: str = field(default_factory=unique_client_id)
    connect_timeout: float = 2.0
    ack_timeout: float = 30.0
    max_pub_acks_inflight: int = 16384
    ping_interval: int = 5
    ping_max_out: int = 88
    discover_prefix: str = "_STAN.discover"
    ack_wait: int = 30
    max_inflight: int | None = None
    delayed_nack: bool = False
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nats_options: Mapping[str, Any] = field(default_factory=dict)
    monitor_url: str | None = None

    def __post_init__(self) -> None:
        for name, hint in _ID_HINTS.items():
            value = getattr(self, name)
            if not isinstance(value, str) or not CLIENT_ID_RE.match(value):
                raise ConfigurationError(f"StanOptions.{name} {value!r} is not valid: {hint}")
        if not isinstance(self.servers, str) or not self.servers.strip():
            raise ConfigurationError("StanOptions.servers is required, e.g. nats://127.0.0.1:4223")
        for name in ("connect_timeout", "ack_timeout"):
            check_number(f"StanOptions.{name} (seconds)", getattr(self, name), above=True)
        for name in ("max_pub_acks_inflight", "ping_interval", "ping_max_out", "ack_wait"):
            kit.check_count("StanOptions", name, getattr(self, name), maximum=kit.INT32)
        if self.max_inflight is not None:
            kit.check_count("StanOptions", "max_inflight", self.max_inflight, maximum=kit.INT32)
        if self.monitor_url is not None and (
            not isinstance(self.monitor_url, str)
            or not self.monitor_url.startswith(("http://", "https://"))
        ):
            raise ConfigurationError(
                f"StanOptions.monitor_url must be the server's http(s):// monitoring address "
                f"(its -m port, e.g. http://127.0.0.1:8222), got {self.monitor_url!r}"
            )
        kit.check_mapping("StanOptions", "nats_options", self.nats_options, _OWNED_NATS_KEYS)

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (secrets included: never log this)."""
        kwargs: dict[str, Any] = {
            "servers": [s.strip() for s in self.servers.split(",") if s.strip()],
            "name": self.client_id,
            "connect_timeout": self.connect_timeout,
            "reconnect_time_wait": 1,
            # The first connect tries each server twice and fails (nats-py would loop
            # forever with -1); once connected the session sets -1: reconnect forever.
            "max_reconnect_attempts": 1,
        }
        for name in ("user", "password", "token"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if _SKIPS_VALIDATION:
            # Our subjects are our inboxes and checked channel names: no per-publish check.
            kwargs["skip_subject_validation"] = True
        kwargs.update(self.nats_options)
        return kwargs

    @classmethod
    def from_parts(cls, fields: dict[str, Any], url: kit.ParsedUrl) -> None:
        for name, value in (("user", url.user), ("password", url.password)):
            if value is not None:
                fields.setdefault(name, value)
        scheme = "tls" if url.parts.scheme.lower().endswith("+tls") else "nats"
        fields.setdefault(
            "servers", ",".join(f"{scheme}://{h.strip()}" for h in url.hosts.split(","))
        )
        if url.parts.path.strip("/"):
            fields.setdefault("cluster_id", url.parts.path.strip("/"))
        if "cluster_id" not in fields:
            raise ConfigurationError(
                "a stan URL needs the cluster id: stan://host:4223?cluster_id=<the server's "
                "--cluster_id> (the server's default is 'test-cluster')"
            )


@dataclass(frozen=True, slots=True, repr=False)
class StanSubscriptionOptions(kit.Redacted):
    """What one subscription may set (pass as the subscription's ``options``): its ``kind``
    (``durable_queue`` by default), names, ``max_inflight``, ``ack_wait`` and at most one
    of the start positions (docs/engines/stan.md#connecting-and-options).
    """

    kind: SubscriptionKind = "durable_queue"
    queue_group: str | None = None
    durable_name: str | None = None
    max_inflight: int | None = None
    ack_wait: int | None = None
    start: StartAt | None = None
    start_sequence: int | None = None
    start_time_delta: float | None = None

    def __post_init__(self) -> None:
        owner = "StanSubscriptionOptions"
        kit.check_choice(owner, "kind", self.kind, ("durable_queue", "queue", "durable", "plain"))
        kit.check_name(owner, "queue_group", self.queue_group, optional=True)
        kit.check_name(owner, "durable_name", self.durable_name, optional=True)
        if self.durable_name and ":" in self.durable_name and self.kind == "durable_queue":
            raise ConfigurationError(
                "StanSubscriptionOptions.durable_name of a durable queue group may not "
                f"contain ':' (got {self.durable_name!r})"
            )
        for name in ("max_inflight", "ack_wait", "start_sequence"):
            if getattr(self, name) is not None:  # int32 fields of the protocol, but the last
                top = None if name == "start_sequence" else kit.INT32
                kit.check_count(owner, name, getattr(self, name), maximum=top)
        names = ("start", "start_sequence", "start_time_delta")
        starts = [name for name in names if getattr(self, name) is not None]
        if len(starts) > 1:
            raise ConfigurationError(
                f"StanSubscriptionOptions: give at most one of start, start_sequence, "
                f"start_time_delta (got {starts})"
            )
        if self.start is not None:
            kit.check_choice(owner, "start", self.start, ("first", "new_only", "last_received"))
        if self.start_time_delta is not None:
            check_number(f"{owner}.start_time_delta (seconds)", self.start_time_delta)
