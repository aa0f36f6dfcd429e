"""Typed options of the Kafka driver; anything not modelled passes through to librdkafka
(``client_config``, ``producer_config``, ``consumer_config``). Secrets never appear in reprs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ...errors import ConfigurationError
from ...numbers import check_number
from ...redaction import redact as redact
from ..kit import options as kit

Assignment = Literal["cooperative-sticky", "range", "roundrobin"]
ASSIGNMENTS = ("cooperative-sticky", "range", "roundrobin")
CLIENT_LOGGER = logging.getLogger("hexa_event.drivers.kafka.librdkafka")
"""librdkafka's own log lines; a line repeated within ``_REPEAT_WINDOW`` s is logged once."""
_REPEAT_WINDOW = 10.0


_seen: dict[str, float] = {}


def _not_repeated(record: logging.LogRecord) -> bool:
    """Drops a line logged less than ``_REPEAT_WINDOW`` ago (an outage repeats many)."""
    text = record.getMessage()
    now = record.created
    if now - _seen.get(text, float("-inf")) < _REPEAT_WINDOW:
        return False
    if len(_seen) > 1000:
        _seen.clear()
    _seen[text] = now
    return True


CLIENT_LOGGER.addFilter(_not_repeated)

# Settings the driver owns because its guarantees depend on them.
_OWNED_CONSUMER = {
    "enable.auto.offset.store": "the driver stores only offsets of finished events",
    "group.id": "the group is the subscription's action (or KafkaSubscriptionOptions.group)",
    "on_commit": "the driver handles commit results itself",
    "enable.auto.commit": "the driver commits the positions of settled events itself",
    "partition.assignment.strategy": "use KafkaSubscriptionOptions(assignment=...)",
}
_OWNED_PRODUCER = {"on_delivery": "the driver awaits each record's delivery report itself"}
_OWNED_CLIENT = {**_OWNED_CONSUMER, **_OWNED_PRODUCER}
_OFF_ANYWAY = ("enable.auto.offset.store", "enable.auto.commit")


_DOTLESS_KEYS = frozenset({"acks", "debug", "retries"})
"""The librdkafka settings without a dot in their name (fields of ours have none)."""


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]@,?#]+)(?::([^:]*))?$")


def check_bootstrap(servers: str) -> None:
    """Raise ConfigurationError unless ``servers`` is ``host[:port][,host[:port]...]``."""
    for entry in servers.split(","):
        entry = entry.strip()
        entry = entry.split("://", 1)[1] if "://" in entry else entry
        match = _HOST_PORT.match(entry)
        if match is None:
            raise ConfigurationError(
                f"Kafka bootstrap server {entry!r} is not host:port; write e.g. "
                "'127.0.0.1:9092' or 'kafka://broker1:9092,broker2:9092'"
            )
        port = match.group(2)  # None: librdkafka's default port, 9092
        if port is not None and not (
            port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535
        ):
            raise ConfigurationError(
                f"Kafka bootstrap server {entry!r} has port {port!r}: a port is a number "
                "from 1 to 65535 (Kafka listens on 9092 by default)"
            )


def _check(owner: str, name: str, config: object, owned: Mapping[str, str]) -> None:
    """:func:`kit.check_mapping` of librdkafka settings, ``owned`` by the driver (those it
    turns off may be given off)."""
    if isinstance(config, Mapping):
        config = {
            k: v for k, v in config.items() if k not in _OFF_ANYWAY or v not in (False, "false")
        }
    kit.check_mapping(owner, name, config, owned, what="librdkafka keys")


_MAX_S = kit.INT32 / 1000
"""The longest timeout, in seconds: librdkafka's are int32 milliseconds."""

_FAST_FIRST_REQUEST = {"reconnect.backoff.ms": 10}
"""Admin client and producer: connect to the learnt brokers without librdkafka's 100 ms
back-off (docs/engines/kafka.md, "Latency"); consumers keep the default."""


@dataclass(frozen=True, slots=True, repr=False)
class KafkaOptions(kit.DriverOptions):
    """How the driver talks to Kafka (docs/engines/kafka.md, "Connecting and options").

    ``provision``: create missing topics (``partitions``, ``replication_factor``,
    ``topic_config``) on first use; when off, a missing topic raises ChannelNotFoundError.
    ``partitioner``: ``fnv1a_random`` places keys where Go hexa-event's sarama producers do.
    ``delivery_timeout``: seconds before an unacknowledged emit fails. The TLS and SASL
    fields are librdkafka's settings (``security_protocol`` is ``security.protocol``).

    URL: ``kafka://[user:password@]host:port[,host:port][?option=value&...]``: user info
    becomes SASL credentials (PLAIN over SASL_PLAINTEXT unless set otherwise); a query
    option is a field or a librdkafka setting (:meth:`passes_through`) for ``client_config``.
    """

    engine = "Kafka"
    example = "kafka://127.0.0.1:9092"
    client_hint = "Pass librdkafka settings in client_config={...}"
    passthrough_hint = "librdkafka settings (security.protocol, linger.ms, acks...) pass through"
    masked_fields = ("sasl_password", "ssl_key_password")

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "hexa-event"
    provision: bool = True
    partitions: int = 3
    replication_factor: int = 1
    topic_config: Mapping[str, str] = field(default_factory=dict)
    partitioner: str = "fnv1a_random"
    delivery_timeout: float = 30.0
    linger_ms: float = 5.0
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: str | None = None
    client_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    revoke_timeout: float = 15.0
    """Seconds a revoked partition's in-flight events may take to finish before abandoning."""
    assignment_timeout: float = 30.0
    """Seconds ``subscribe`` waits for the group's first assignment."""
    metadata_timeout: float = 5.0
    """Seconds a topic metadata lookup (provisioning, first publish to a topic) may take
    before the publish or subscribe fails with a DriverError (broker unreachable)."""
    group_lag: bool = False
    """Sample the whole group's lag through the admin API instead of this process's own
    partitions from cached watermarks (off: librdkafka aborted in broker-restart tests)."""
    poll_stall_timeout: float = 60.0
    """Seconds a consumer thread may stay in one call past that call's own bound before it
    is reported and replaced (0: no stall check); docs/engines/kafka.md, "Failures and recovery"."""
    coordinator_timeout: float = 60.0
    """Seconds a consumer may go without its group coordinator, while the brokers answer,
    before it is replaced (0: never; backed off, not counted as a stall);
    docs/engines/kafka.md, "Failures and recovery"."""

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise ConfigurationError(
                "KafkaOptions.bootstrap_servers is required, e.g. '127.0.0.1:9092'"
            )
        check_bootstrap(self.bootstrap_servers)
        for name, top in (("partitions", 100_000), ("replication_factor", 10_000)):  # librdkafka's
            kit.check_count("KafkaOptions", name, getattr(self, name), maximum=top)
        for name in (f.name for f in fields(self) if f.name.endswith("_timeout")):
            least = 0.001 if name in ("delivery_timeout", "metadata_timeout") else 0.0  # 0: none
            value = getattr(self, name)  # librdkafka's timeouts are int32 milliseconds
            check_number(f"KafkaOptions.{name} (seconds)", value, minimum=least, maximum=_MAX_S)
        check_number("KafkaOptions.linger_ms", self.linger_ms, maximum=900_000)
        _check("KafkaOptions", "client_config", self.client_config, _OWNED_CLIENT)
        _check("KafkaOptions", "producer_config", self.producer_config, _OWNED_PRODUCER)
        _check("KafkaOptions", "consumer_config", self.consumer_config, _OWNED_CONSUMER)

    def common_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producer, consumer and admin client (their log
        lines go to Python logging)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "logger": CLIENT_LOGGER,
        }
        for f in fields(self):  # the TLS and SASL fields: security_protocol -> security.protocol
            value = getattr(self, f.name)
            if f.name.startswith(("security_", "sasl_", "ssl_")) and value is not None:
                config[f.name.replace("_", ".")] = value
        config.update(self.client_config)
        return config

    def producer(self) -> dict[str, Any]:
        """Producer settings: idempotent, acks=all, sarama-compatible partitioner."""
        return {
            **_FAST_FIRST_REQUEST,
            **self.common_config(),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": self.partitioner,
            "linger.ms": self.linger_ms,
            "message.timeout.ms": int(self.delivery_timeout * 1000),
            **self.producer_config,
        }

    def consumer(self, group: str, start: str, sub: KafkaSubscriptionOptions) -> dict[str, Any]:
        """Consumer settings for ``group``: the driver commits only finished events."""
        config = {
            **self.common_config(),
            "auto.offset.reset": "earliest" if start == "earliest" else "latest",
            "enable.partition.eof": False,
            "topic.metadata.refresh.interval.ms": 5000,
            # The first fetch after an assignment waits this long at the broker (500 ms by
            # default): docs/engines/kafka.md, "Latency".
            "fetch.wait.max.ms": 20,
            **self.consumer_config,
            **sub.consumer_config,
            "group.id": group,
            "enable.auto.offset.store": False,
            "enable.auto.commit": False,
            "partition.assignment.strategy": sub.assignment,
        }
        if sub.assignment != "cooperative-sticky" and config.get("group.protocol") == "consumer":
            raise ConfigurationError(
                f"KafkaSubscriptionOptions(assignment={sub.assignment!r}) is a classic-protocol "
                "eager strategy: remove group.protocol=consumer (KIP-848 is incremental only)"
            )
        return config

    def admin(self) -> dict[str, Any]:
        """Admin client settings: a metadata request for one topic never creates it (a
        broker's auto.create.topics)."""
        return {**_FAST_FIRST_REQUEST, "allow.auto.create.topics": False, **self.common_config()}

    @classmethod
    def passes_through(cls, key: str) -> bool:
        """A librdkafka setting (a name with a dot, or one of ``_DOTLESS_KEYS``)."""
        return "." in key or key in _DOTLESS_KEYS

    @classmethod
    def from_parts(cls, fields: dict[str, Any], url: kit.ParsedUrl) -> None:
        client_config = {**dict(url.passed), **dict(fields.get("client_config") or {})}
        fields["client_config"] = client_config
        if url.user is not None:
            fields.setdefault("sasl_username", url.user)
            fields.setdefault("sasl_password", url.password or "")
            fields.setdefault("sasl_mechanism", client_config.pop("sasl.mechanism", "PLAIN"))
            fields.setdefault(
                "security_protocol", client_config.pop("security.protocol", "SASL_PLAINTEXT")
            )
        fields.setdefault("bootstrap_servers", url.hosts)


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSubscriptionOptions(kit.Redacted):
    """Per-subscription Kafka settings (docs/engines/kafka.md, "Internals").

    ``group`` overrides the consumer group (by default the subscription's action, as in Go).
    ``assignment``: the group's strategy; ``cooperative-sticky`` moves only the partitions
    that change owner, the eager ``range`` and ``roundrobin`` are what sarama (Go
    hexa-event) speaks: ``range`` shares a group with Go members (all must use the same).
    ``separate_retry_group``: read the retry channels in ``<group>.retry`` (None: on for
    cooperative-sticky, off for the eager strategies, which keep Go's one group).
    ``consumer_config``: librdkafka settings for this subscription only. ``buffer``: how
    many fetched records may wait locally before fetching pauses.
    """

    group: str | None = None
    assignment: Assignment = "cooperative-sticky"
    separate_retry_group: bool | None = None
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    buffer: int = 2000

    def __post_init__(self) -> None:
        owner = "KafkaSubscriptionOptions"
        kit.check_name(owner, "group", self.group, optional=True)
        hint = " (use 'range' to share a group with Go hexa-event)"
        kit.check_choice(owner, "assignment", self.assignment, ASSIGNMENTS, hint)
        if self.separate_retry_group is None:
            cooperative = self.assignment == "cooperative-sticky"
            object.__setattr__(self, "separate_retry_group", cooperative)
        _check(owner, "consumer_config", self.consumer_config, _OWNED_CONSUMER)
        kit.check_count(owner, "buffer", self.buffer)
