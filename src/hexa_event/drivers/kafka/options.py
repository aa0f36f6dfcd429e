"""Typed options of the Kafka driver (the Go library's ``Extra``, done right).

Anything we do not model passes through unchanged to librdkafka in ``client_config``
(both sides), ``producer_config`` or ``consumer_config``; see librdkafka's CONFIGURATION.md.
Secrets (SASL password, key passwords, OAuth secrets, JAAS configs) never appear in reprs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import ConfigurationError
from ...numbers import check_number
from ...redaction import redact as redact
from ..kit import options as kit

Assignment = Literal["cooperative-sticky", "range", "roundrobin"]
ASSIGNMENTS = ("cooperative-sticky", "range", "roundrobin")
CLIENT_LOGGER = logging.getLogger("hexa_event.drivers.kafka.librdkafka")
"""librdkafka's own log lines (producer, consumers and admin client), served from the
driver's threads; a line repeated within ``_REPEAT_WINDOW`` seconds is logged once."""
_REPEAT_WINDOW = 10.0


class _RepeatFilter(logging.Filter):
    """Drops a librdkafka line identical to one logged less than ``_REPEAT_WINDOW`` ago
    (during an outage librdkafka repeats its connect failure many times a second)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        now = record.created
        if now - self._seen.get(text, float("-inf")) < _REPEAT_WINDOW:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[text] = now
        return True


CLIENT_LOGGER.addFilter(_RepeatFilter())

# Settings the driver owns because its guarantees depend on them.
_FORBIDDEN_CONSUMER = {
    "enable.auto.offset.store": "the driver stores only offsets of finished events",
    "group.id": "the group is the subscription's action (or KafkaSubscriptionOptions.group)",
    "on_commit": "the driver handles commit results itself",
    "enable.auto.commit": "the driver commits the positions of settled events itself",
    "partition.assignment.strategy": "use KafkaSubscriptionOptions(assignment=...)",
}
_FORBIDDEN_PRODUCER = {
    "on_delivery": "the driver awaits each record's delivery report itself",
}


_DOTLESS_KEYS = frozenset({"acks", "debug", "retries"})
"""The librdkafka settings without a dot in their name (fields of ours have none)."""


def librdkafka_key(key: str) -> bool:
    """Whether a URL query option is a librdkafka setting (passed to ``client_config``)."""
    return "." in key or key in _DOTLESS_KEYS


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
        port = match.group(2)
        if port is None:
            continue  # librdkafka's default port, 9092
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigurationError(
                f"Kafka bootstrap server {entry!r} has port {port!r}: a port is a number "
                "from 1 to 65535 (Kafka listens on 9092 by default)"
            )


def _harmless(key: str, value: Any) -> bool:
    """A forbidden key set to the value the driver uses anyway."""
    return key in ("enable.auto.offset.store", "enable.auto.commit") and value in (False, "false")


_FAST_FIRST_REQUEST = {"reconnect.backoff.ms": 10}
"""For the admin client and the producer: librdkafka drops its bootstrap connection once it
knows the brokers and waits out this back-off before connecting to them; at its 100 ms that
put about 50 ms on the first metadata request. (Consumers keep librdkafka's default: a
consumer group's rejoin after a broker restart is left to librdkafka's own pacing.) The
back-off still doubles on every failed attempt, up to reconnect.backoff.max.ms."""


@dataclass(frozen=True, slots=True, repr=False)
class KafkaOptions(kit.DriverOptions):
    """How the driver talks to Kafka.

    ``bootstrap_servers``: ``host:port[,host:port]``. ``provision``: create missing topics
    (``partitions`` and ``replication_factor``, plus ``topic_config``) on first use; when
    off, an emit or subscribe to a missing topic raises ChannelNotFoundError.
    ``partitioner``: librdkafka's partitioner; ``fnv1a_random`` places keys where Go
    hexa-event's sarama producers do. ``delivery_timeout``: seconds before an unacknowledged
    emit fails. TLS and SASL settings are librdkafka's (``security.protocol``,
    ``ssl.ca.location``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``...), given
    as the typed fields below or in ``client_config``.

    URL: ``kafka://[user:password@]host:port[,host:port][?option=value&...]``. User info
    becomes SASL credentials (PLAIN over SASL_PLAINTEXT unless the query or options say
    otherwise). Query options are this class's fields (``?partitions=6&provision=false``)
    or librdkafka settings, which go to ``client_config`` (:func:`librdkafka_key`).
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
    """Sample the whole group's lag through the admin API (every process reports the same
    figure) instead of this process's own partitions from cached watermarks (no requests;
    add processes up). Off by default: librdkafka aborted the process (its ``enq_once``
    assertion) in broker-restart tests with admin lag requests outstanding."""
    poll_stall_timeout: float = 60.0
    """Seconds a consumer thread may stay in one call past that call's own bound (a poll's
    wait, a rebalance callback's ``revoke_timeout``, a commit) before the watchdog calls it
    stalled: health turns unhealthy naming it, its stack is logged and the member is
    replaced by a fresh consumer on a fresh thread (a dead thread is replaced too). 0 turns
    the stall check off (a dead thread is still replaced)."""
    coordinator_timeout: float = 60.0
    """Seconds a consumer may go without its group coordinator (its partitions lost with the
    group's session and not given back, or its commits waiting for or refused by the
    coordinator) before it is replaced by a fresh consumer like a stalled one; health
    reports the problem from its start. A replacement for this does not count towards the
    watchdog's limit; a group's next one waits twice as long (up to 10 minutes) until a
    consumer of it is assigned again. 0: never replaced for this."""

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise ConfigurationError(
                "KafkaOptions.bootstrap_servers is required, e.g. '127.0.0.1:9092'"
            )
        check_bootstrap(self.bootstrap_servers)
        for name in ("partitions", "replication_factor"):
            check_number(f"KafkaOptions.{name}", getattr(self, name), minimum=1, integer=True)
        for name in ("delivery_timeout", "metadata_timeout"):
            check_number(f"KafkaOptions.{name} (seconds)", getattr(self, name), above=True)
        for name in (
            "revoke_timeout",
            "assignment_timeout",
            "poll_stall_timeout",
            "coordinator_timeout",
        ):
            check_number(f"KafkaOptions.{name} (seconds)", getattr(self, name))
        check_number("KafkaOptions.linger_ms", self.linger_ms)
        for name in ("client_config", "producer_config", "consumer_config"):
            kit.check_mapping("KafkaOptions", name, getattr(self, name), what="librdkafka keys")
        for key, why in _FORBIDDEN_CONSUMER.items():
            for source in (self.client_config, self.consumer_config):
                if key in source and not _harmless(key, source[key]):
                    raise ConfigurationError(f"KafkaOptions: do not set {key!r}: {why}")
        for key, why in _FORBIDDEN_PRODUCER.items():
            if key in self.producer_config or key in self.client_config:
                raise ConfigurationError(f"KafkaOptions: do not set {key!r}: {why}")

    def common_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producer, consumer and admin client."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
        }
        typed = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password,
        }
        config.update({k: v for k, v in typed.items() if v is not None})
        config.update(self.client_config)
        return config

    def producer(self) -> dict[str, Any]:
        """Producer settings: idempotent, acks=all, sarama-compatible partitioner."""
        config = {**_FAST_FIRST_REQUEST, **self.common_config()}
        config.update(
            {
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": self.partitioner,
                "linger.ms": self.linger_ms,
                "message.timeout.ms": int(self.delivery_timeout * 1000),
            }
        )
        config.setdefault("logger", CLIENT_LOGGER)
        config.update(self.producer_config)
        return config

    def consumer(
        self, group: str, start: str, sub: KafkaSubscriptionOptions | None = None
    ) -> dict[str, Any]:
        """Consumer settings for ``group``: the driver commits only finished events."""
        sub = sub or KafkaSubscriptionOptions()
        config = self.common_config()
        config.update(
            {
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest" if start == "earliest" else "latest",
                "enable.partition.eof": False,
                "topic.metadata.refresh.interval.ms": 5000,
                # A fetch that finds its partitions empty waits this long at the broker. The
                # first fetch after an assignment goes out before the start offsets are
                # resolved, so it delays the first record by this much (librdkafka's 500 ms
                # made that half a second; 100 ms a tenth). 20 ms costs an idle member about
                # 50 small fetches a second per broker; raise it in consumer_config if that
                # matters more than latency.
                "fetch.wait.max.ms": 20,
            }
        )
        config.setdefault("logger", CLIENT_LOGGER)
        config.update(self.consumer_config)
        config.update(sub.consumer_config)
        config["group.id"] = group
        config["enable.auto.offset.store"] = False
        config["enable.auto.commit"] = False
        config["partition.assignment.strategy"] = sub.assignment
        if sub.assignment != "cooperative-sticky" and config.get("group.protocol") == "consumer":
            raise ConfigurationError(
                f"KafkaSubscriptionOptions(assignment={sub.assignment!r}) is a classic-protocol "
                "eager strategy: remove group.protocol=consumer (KIP-848 is incremental only)"
            )
        return config

    def admin(self) -> dict[str, Any]:
        """Admin client settings: librdkafka's log lines go to Python logging too; a
        metadata request for one topic never creates it (a broker's auto.create.topics)."""
        config = {**_FAST_FIRST_REQUEST, "allow.auto.create.topics": False, **self.common_config()}
        config.setdefault("logger", CLIENT_LOGGER)
        return config

    @classmethod
    def passes_through(cls, key: str) -> bool:
        return librdkafka_key(key)

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
    """Per-subscription Kafka settings.

    ``group`` overrides the consumer group (by default the subscription's action, as in Go).
    ``assignment``: the partition assignment strategy of the group. ``cooperative-sticky``
    (the default) moves only the partitions that change owner; ``range`` and ``roundrobin``
    are eager (every member gives everything back on each rebalance) and are what sarama,
    hence Go hexa-event, speaks: use ``range`` to share a group with Go members (every
    member of a group must use the same strategy).
    ``separate_retry_group``: read the action's retry channels in a group of their own,
    ``<group>.retry``, so that members share the source channel evenly (cooperative-sticky
    balances a group's total partition count, not each topic). ``None`` (the default) means
    on for cooperative-sticky and off for the eager strategies, which spread each topic
    over the members and must keep Go's one group per action.
    ``consumer_config`` is passed to librdkafka's consumer for this subscription only.
    ``buffer``: how many fetched records may wait locally before fetching pauses.
    """

    group: str | None = None
    assignment: Assignment = "cooperative-sticky"
    separate_retry_group: bool | None = None
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    buffer: int = 2000

    def __post_init__(self) -> None:
        owner = "KafkaSubscriptionOptions"
        kit.check_name(owner, "group", self.group, optional=True)
        kit.check_choice(
            owner,
            "assignment",
            self.assignment,
            ASSIGNMENTS,
            " (use 'range' to share a group with Go hexa-event)",
        )
        if self.separate_retry_group is None:
            object.__setattr__(
                self, "separate_retry_group", self.assignment == "cooperative-sticky"
            )
        kit.check_mapping(owner, "consumer_config", self.consumer_config, what="librdkafka keys")
        for key, why in _FORBIDDEN_CONSUMER.items():
            value = self.consumer_config.get(key)
            if key in self.consumer_config and not _harmless(key, value):
                raise ConfigurationError(
                    f"{owner}: do not set {key!r}: {why}"
                    + (f"; use {owner}(group=...)" if key == "group.id" else "")
                )
        kit.check_count(owner, "buffer", self.buffer)
