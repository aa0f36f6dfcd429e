"""Typed options of the JetStream driver, plus passthrough mappings for what we do not model.

``NatsOptions`` is the connection and the stream; ``NatsSubscriptionOptions`` one
subscription's durable consumer. ``client_options`` goes to ``nats.connect`` unchanged,
``stream_config`` and ``consumer_config`` are merged into the JSON the driver sends to the
JetStream API (field names of the server's ``StreamConfig``/``ConsumerConfig``, durations in
nanoseconds as the server takes them). Secrets (password, token, credentials, nkey seeds,
TLS key passwords) never appear in reprs, logs or errors.
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


def _token(owner: str, name: str, value: object, *, dots: bool) -> None:
    """A stream name (no dots) or subject prefix (dot-separated tokens)."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{owner}.{name} must be a non-empty string")
    bad = set(" \t\r\n*>/\\") | (set() if dots else {"."})
    if any(c in bad for c in value) or (dots and "" in value.split(".")):
        raise ConfigurationError(
            f"{owner}.{name}={value!r} is not valid in NATS: no whitespace, '*', '>', slashes"
            + (", empty tokens" if dots else " or '.'")
        )


@dataclass(frozen=True, slots=True, repr=False)
class NatsOptions(kit.DriverOptions):
    """How the driver talks to NATS and lays out its stream.

    Layout: one stream (``stream``, default ``HEXA``) holds the subjects
    ``<subject_prefix>.>``; channel ``c`` is subject ``<subject_prefix>.c`` (see
    :func:`~hexa_event.drivers.nats.naming.channel_subject`), and an action's retry and
    dead-letter channels are subjects of the same stream. Delayed records (retry copies
    with a due time) wait as scheduled messages on ``<subject_prefix>_delayed.>`` in the
    same stream (nats-server 2.12+; ``delayed_publish=False`` turns that off). Use another
    ``stream``/``subject_prefix`` pair to keep a set of channels under other limits.

    ``partitions``: 0 (the default) keeps the layout above, where the processes of one
    action share one consumer without regard to keys. ``N >= 1`` puts each record in one
    of N partitions by its key (subject ``<subject_prefix>.%p<n>.c``, see
    :func:`~hexa_event.drivers.nats.naming.partition_of`) and leases the partitions among
    the live processes of each action, one process per partition at a time, so each key
    keeps its order across processes (``Features.ordered_per_key``). The count is recorded
    in the stream's metadata (``hexa_partitions``) and a driver with another count is
    refused: it cannot change for a stream.

    ``provision``: create the stream on first use (else a missing one raises
    ChannelNotFoundError). ``duplicate_window``: seconds within which a re-sent event
    (same ``Nats-Msg-Id``, the event id) is stored once; ``max_age`` (0: keep forever),
    ``max_bytes`` (-1: unlimited), ``storage``, ``replicas``: the stream's limits.
    ``publish_timeout``: seconds an emit waits for the server's acknowledgements;
    ``max_in_flight``: publishes awaiting acknowledgement at once per driver.
    Credentials: ``user``/``password``, ``token``, ``creds_file`` (a ``.creds`` file) or
    ``nkeys_seed`` (a seed file); TLS: ``tls_ca_file``, ``tls_cert_file``, ``tls_key_file``,
    ``tls_hostname`` (or a ``tls://`` URL). ``client_options`` go to ``nats.connect``.

    URL: ``nats://[user:password@|token@]host:port[,host:port][?option=value...]``
    (``tls://`` asks for TLS); a lone user part is a ``token``; query options are this
    class's scalar fields (``stream=ORDERS``, ``storage=memory``...).
    """

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
    """Seconds after which the server deletes a group's consumer nobody pulled from (and
    with it the group's position); 0 keeps consumers forever. For tests and short-lived
    groups."""
    stream_config: Mapping[str, Any] = field(default_factory=dict)
    publish_timeout: float = 30.0
    max_in_flight: int = 4096
    connect_timeout: float = 5.0
    reconnect_wait: float = 1.0
    request_timeout: float = 5.0
    """Seconds a JetStream API call (create stream/consumer, info) may take."""
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
        check_number(f"{owner}.duplicate_window", self.duplicate_window, above=True)
        check_number(f"{owner}.consumer_inactive_threshold", self.consumer_inactive_threshold)
        if self.duplicate_window < 0.1:
            raise ConfigurationError(f"{owner}.duplicate_window must be >= 0.1 seconds")
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
    """Per-subscription settings of the durable pull consumer.

    ``durable``: the consumer name (by default the subscription's action, escaped; see
    :func:`~hexa_event.drivers.nats.naming.consumer_name`). ``ack_wait``: seconds the server
    waits for an ack before redelivering; the driver sends in-progress (``+WPI``) for
    deliveries still unsettled, so only a dead process lets it expire. ``max_deliver``: how
    often the server delivers one record (-1: no limit, the default, because the core's
    retry policy decides retries; a finite limit makes the server stop redelivering, and
    the driver then terminates the record with an error log rather than nack it).
    ``max_ack_pending``: unacked records of the whole group at once (1 gives strict
    order of the group across processes, one record at a time); ``batch``: records asked
    for per pull request (default: the subscription's prefetch); ``heartbeat``: seconds
    between the server's idle heartbeats on a pull, a dead pull is renewed after two missed.
    ``failover``: one member of the group receives at a time and the others stand by
    (JetStream's pinned-client priority group, nats-server 2.11+): the group keeps each
    key's order across processes, with concurrency across keys inside the active member;
    a standby member takes over at once when the active one closes, and
    ``failover_timeout`` seconds after it stops pulling (a crash; default ``ack_wait`` + 5,
    and never less than ``ack_wait``, so the dead member's records are due for
    redelivery, and come first, when the standby takes over). On a partitioned stream
    (``NatsOptions(partitions=N)``) ``failover`` is refused (every partition already has
    one member at a time) and ``failover_timeout`` is both a member's lease and the time
    after which the server unpins the partitions of a member that stopped pulling: a dead
    member's partitions move after it.
    ``consumer_config`` is merged into the consumer's JSON config.
    """

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
        check_number(f"{owner}.ack_wait", self.ack_wait, above=True)
        if self.ack_wait < 1:
            raise ConfigurationError(f"{owner}.ack_wait must be >= 1 second")
        kit.check_count(owner, "max_deliver", self.max_deliver, unlimited=-1)
        kit.check_count(owner, "max_ack_pending", self.max_ack_pending, unlimited=-1)
        if self.batch is not None:
            kit.check_count(owner, "batch", self.batch)
        check_number(f"{owner}.heartbeat", self.heartbeat, above=True)
        if self.heartbeat < 0.5 or self.heartbeat * 2 >= self.ack_wait:
            raise ConfigurationError(
                f"{owner}.heartbeat must be >= 0.5 s and under half of ack_wait"
            )
        kit.check_mapping(owner, "consumer_config", self.consumer_config, _OWNED_CONSUMER)

    @property
    def pull_expires(self) -> float:
        """Seconds a pull request waits at the server (renewed when it expires)."""
        return max(5.0, self.heartbeat * 10)

    @property
    def hand_over_within(self) -> float:
        """Seconds a member that lost a partition waits for its deliveries in flight.

        The server unpins a member ``takeover_after`` seconds after its last pull request,
        which may be a pull's lifetime old when the hand-over starts: the wait ends before,
        so the new owner never receives while the old one still runs a record.
        """
        return max(1.0, self.takeover_after - self.pull_expires - self.heartbeat * 2)

    @property
    def takeover_after(self) -> float:
        """Seconds without pulls after which the server unpins a failover member."""
        return self.failover_timeout if self.failover_timeout is not None else self.ack_wait + 5
