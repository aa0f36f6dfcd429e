"""Typed options of the JetStream driver: ``NatsOptions`` (the connection and the stream),
``NatsSubscriptionOptions`` (one subscription's durable consumer), plus passthrough
mappings (``client_options``, ``stream_config``, ``consumer_config``) for what they do not
model. Secrets never appear in reprs, logs or errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import ConfigurationError
from ...numbers import check_number
from ..kit import options as kit

MAX_PARTITIONS = 1024
"""Upper bound of ``NatsOptions.partitions`` (each partition is a consumer per action)."""

# Fields of the JetStream configs the driver owns because its guarantees depend on them.
_OWNED_STREAM = {
    "name": "set NatsOptions.stream",
    "subjects": "set NatsOptions.subject_prefix (the stream holds '<prefix>.>')",
}
_OWNED_CONSUMER = {
    "durable_name": "the consumer is the subscription's action (or durable=)",
    "name": "the consumer is the subscription's action (or durable=)",
    "ack_policy": "the driver acks explicitly, after the handler",
    "filter_subject": "the subscription's channels",
    "filter_subjects": "the subscription's channels",
    "deliver_subject": "the driver uses pull consumers",
    "deliver_group": "the driver uses pull consumers",
}
# nats.connect arguments the driver passes itself.
_OWNED_CLIENT = {
    "servers": "the URL or NatsOptions.servers",
    "max_reconnect_attempts": "the driver reconnects forever and reports it in status()",
    "disconnected_cb": "the driver reports disconnections in status()",
    "reconnected_cb": "the driver resumes its pulls on reconnect",
    "error_cb": "the driver logs client errors",
    "closed_cb": "the driver tracks the connection",
}


def _token(owner: str, name: str, value: str, *, dots: bool) -> None:
    """A stream name (no dots) or subject prefix (dot-separated tokens)."""
    kit.check_name(owner, name, value)  # a str (the annotation is not checked)
    bad = set(" \t\r\n*>/\\") | (set() if dots else {"."})
    if any(c in bad for c in value) or (dots and "" in value.split(".")):
        raise ConfigurationError(
            f"{owner}.{name}={value!r} is not valid in NATS: no whitespace, '*', '>', slashes"
            + (", empty tokens" if dots else " or '.'")
        )


@dataclass(frozen=True, slots=True, repr=False)
class NatsOptions(kit.DriverOptions):
    """How the driver connects and lays out its stream (every field: docs/engines/nats.md,
    "Connecting and options"). URL: ``nats://[user:password@|token@]host:port[,host:port]``
    (``tls://`` for TLS; a lone user part is a ``token``) with the scalar fields as query
    options (``?stream=ORDERS&storage=memory``)."""

    engine = "NATS"
    example = "nats://127.0.0.1:4222"
    client_hint = "Pass nats.connect settings in client_options={...}"
    masked_fields = ("password", "token", "nkeys_seed", "creds_file")
    url_fields = ("servers",)

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    name: str = "hexa-event"
    stream: str = "HEXA"
    subject_prefix: str = "hexa"
    provision: bool = True
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    max_age: float = 0.0
    max_bytes: int = -1
    duplicate_window: float = 600.0
    delayed_publish: bool = True
    partitions: int = 0
    consumer_inactive_threshold: float = 0.0
    stream_config: Mapping[str, Any] = field(default_factory=dict)
    publish_timeout: float = 30.0
    max_in_flight: int = 4096
    connect_timeout: float = 5.0
    reconnect_wait: float = 1.0
    request_timeout: float = 5.0
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    nkeys_seed: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    client_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "NatsOptions"
        servers = self.servers
        if isinstance(servers, str):
            servers = tuple(s.strip() for s in servers.split(",") if s.strip())
            object.__setattr__(self, "servers", servers)
        if not servers or not all(isinstance(s, str) and s for s in servers):
            raise ConfigurationError(
                f"{owner}.servers needs at least one URL, e.g. ('nats://127.0.0.1:4222',)"
            )
        _token(owner, "stream", self.stream, dots=False)
        _token(owner, "subject_prefix", self.subject_prefix, dots=True)
        kit.check_count(owner, "partitions", self.partitions, minimum=0, maximum=MAX_PARTITIONS)
        kit.check_choice(owner, "storage", self.storage, ("file", "memory"))
        kit.check_count(owner, "replicas", self.replicas, maximum=5)
        check_number(f"{owner}.max_age", self.max_age)
        kit.check_count(owner, "max_bytes", self.max_bytes, unlimited=-1)
        check_number(f"{owner}.duplicate_window", self.duplicate_window, minimum=0.1)
        check_number(f"{owner}.consumer_inactive_threshold", self.consumer_inactive_threshold)
        if self.max_age and self.duplicate_window > self.max_age:
            raise ConfigurationError(
                f"{owner}.duplicate_window ({self.duplicate_window}s) cannot exceed "
                f"max_age ({self.max_age}s); lower it or raise max_age"
            )
        for name in ("publish_timeout", "connect_timeout", "reconnect_wait", "request_timeout"):
            check_number(f"{owner}.{name}", getattr(self, name), above=True)
        kit.check_count(owner, "max_in_flight", self.max_in_flight)
        if self.token is not None and self.user is not None:
            raise ConfigurationError(f"{owner}: pass either token or user/password, not both")
        kit.check_mapping(owner, "stream_config", self.stream_config, _OWNED_STREAM)
        kit.check_mapping(owner, "client_options", self.client_options, _OWNED_CLIENT)

    @property
    def delayed_prefix(self) -> str:
        """Subjects of scheduled (delayed) records: ``<subject_prefix>_delayed``."""
        return f"{self.subject_prefix}_delayed"

    @classmethod
    def from_parts(cls, fields: dict[str, Any], url: kit.ParsedUrl) -> None:
        if url.password is not None:
            fields.setdefault("user", url.user)
            fields.setdefault("password", url.password)
        elif url.user is not None:
            fields.setdefault("token", url.user)
        scheme = "tls" if url.parts.scheme.lower() in ("tls", "nats+tls") else "nats"
        fields.setdefault("servers", tuple(f"{scheme}://{h}" for h in url.hosts.split(",")))


@dataclass(frozen=True, slots=True, repr=False)
class NatsSubscriptionOptions(kit.Redacted):
    """Per-subscription settings of the durable pull consumer (every field:
    docs/engines/nats.md, "Receiving"; ``failover``: "Order")."""

    durable: str | None = None
    ack_wait: float = 30.0
    max_deliver: int = -1
    max_ack_pending: int = 10_000
    batch: int | None = None
    heartbeat: float = 2.0
    failover: bool = False
    failover_timeout: float | None = None
    consumer_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "NatsSubscriptionOptions"
        if self.failover_timeout is not None:
            check_number(f"{owner}.failover_timeout", self.failover_timeout, above=True)
            if self.failover_timeout <= self.ack_wait:
                raise ConfigurationError(
                    f"{owner}.failover_timeout ({self.failover_timeout}s) must exceed ack_wait "
                    f"({self.ack_wait}s), so a dead member's records come back before the "
                    "standby takes over; lower ack_wait (in-progress keeps long handlers)"
                )
        kit.check_name(owner, "durable", self.durable, optional=True)
        check_number(f"{owner}.ack_wait", self.ack_wait, minimum=1)
        kit.check_count(owner, "max_deliver", self.max_deliver, unlimited=-1)
        kit.check_count(owner, "max_ack_pending", self.max_ack_pending, unlimited=-1)
        if self.batch is not None:
            kit.check_count(owner, "batch", self.batch)
        check_number(f"{owner}.heartbeat", self.heartbeat, minimum=0.5)
        if self.heartbeat * 2 >= self.ack_wait:
            raise ConfigurationError(f"{owner}.heartbeat must be under half of ack_wait")
        kit.check_mapping(owner, "consumer_config", self.consumer_config, _OWNED_CONSUMER)

    @property
    def pull_expires(self) -> float:
        """Seconds a pull request waits at the server (renewed when it expires)."""
        return max(5.0, self.heartbeat * 10)

    @property
    def hand_over_within(self) -> float:
        """Seconds a member that lost a partition waits for its deliveries in flight: less
        than the server's unpin after the last pull (``takeover_after``), which may be a
        pull's lifetime old, so the new owner never receives while the old one still runs."""
        return max(1.0, self.takeover_after - self.pull_expires - self.heartbeat * 2)

    @property
    def takeover_after(self) -> float:
        """Seconds without pulls after which the server unpins a failover member."""
        return self.failover_timeout if self.failover_timeout is not None else self.ack_wait + 5
