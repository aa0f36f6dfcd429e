"""Typed options of the Kafka driver (the Go library's ``Extra``, done right).

Anything we do not model passes through unchanged to librdkafka in ``client_config``
(both sides), ``producer_config`` or ``consumer_config``; see librdkafka's CONFIGURATION.md.
Secrets (SASL password, key passwords, OAuth secrets, JAAS configs) never appear in reprs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...errors import ConfigurationError

_SECRET_MARKERS = ("password", "secret", "jaas", "token", "credential", "private.key")
REDACTED = "***"
CLIENT_LOGGER = logging.getLogger("hexa_event.drivers.kafka.librdkafka")
"""librdkafka's own log lines, served from the driver's poll threads."""

# Settings the driver owns because its guarantees depend on them.
_FORBIDDEN_CONSUMER = {
    "enable.auto.offset.store": "the driver stores only offsets of finished events",
    "group.id": "the group is the subscription's action (or KafkaSubscriptionOptions.group)",
    "on_commit": "the driver handles commit results itself",
}
_FORBIDDEN_PRODUCER = {
    "on_delivery": "the driver awaits each record's delivery report itself",
}


def is_secret(name: str) -> bool:
    """Whether a librdkafka config key holds a secret (its value is never shown)."""
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose secret values are replaced by ``***``."""
    return {k: (REDACTED if is_secret(k) else v) for k, v in config.items()}


def _check_config(name: str, config: Mapping[str, Any]) -> None:
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"KafkaOptions.{name} must be a mapping of librdkafka keys")
    for key in config:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"KafkaOptions.{name} has a bad key {key!r}")


@dataclass(frozen=True, slots=True, repr=False)
class KafkaOptions:
    """How the driver talks to Kafka.

    ``bootstrap_servers``: ``host:port[,host:port]``. ``provision``: create missing topics
    (``partitions`` and ``replication_factor``, plus ``topic_config``) on first use; when
    off, an emit or subscribe to a missing topic raises ChannelNotFoundError.
    ``partitioner``: librdkafka's partitioner; ``fnv1a_random`` places keys where Go
    hexa-event's sarama producers do. ``delivery_timeout``: seconds before an unacknowledged
    emit fails. TLS and SASL settings are librdkafka's (``security.protocol``,
    ``ssl.ca.location``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``...), given
    as the typed fields below or in ``client_config``.
    """

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

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise ConfigurationError(
                "KafkaOptions.bootstrap_servers is required, e.g. '127.0.0.1:9092'"
            )
        if not isinstance(self.partitions, int) or self.partitions < 1:
            raise ConfigurationError("KafkaOptions.partitions must be an integer >= 1")
        if not isinstance(self.replication_factor, int) or self.replication_factor < 1:
            raise ConfigurationError("KafkaOptions.replication_factor must be an integer >= 1")
        if self.delivery_timeout <= 0:
            raise ConfigurationError("KafkaOptions.delivery_timeout must be > 0 seconds")
        if self.linger_ms < 0:
            raise ConfigurationError("KafkaOptions.linger_ms must be >= 0")
        if self.revoke_timeout < 0 or self.assignment_timeout < 0:
            raise ConfigurationError("KafkaOptions timeouts must be >= 0 seconds")
        for name in ("client_config", "producer_config", "consumer_config"):
            _check_config(name, getattr(self, name))
        for key, why in _FORBIDDEN_CONSUMER.items():
            for source in (self.client_config, self.consumer_config):
                if key in source and not (
                    key == "enable.auto.offset.store" and source[key] in (False, "false")
                ):
                    raise ConfigurationError(f"KafkaOptions: do not set {key!r}: {why}")
        for key, why in _FORBIDDEN_PRODUCER.items():
            if key in self.producer_config or key in self.client_config:
                raise ConfigurationError(f"KafkaOptions: do not set {key!r}: {why}")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (isinstance(value, Mapping) and not value):
                continue
            if f.name in ("sasl_password", "ssl_key_password"):
                value = REDACTED
            elif isinstance(value, Mapping):
                value = redact(value)
            parts.append(f"{f.name}={value!r}")
        return f"KafkaOptions({', '.join(parts)})"

    __str__ = __repr__

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
        config = self.common_config()
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

    def consumer(self, group: str, start: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        """Consumer settings for ``group``: offsets stored only for finished events."""
        config = self.common_config()
        config.update(
            {
                "group.id": group,
                "enable.auto.commit": True,
                "auto.commit.interval.ms": 1000,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest" if start == "earliest" else "latest",
                "partition.assignment.strategy": "cooperative-sticky",
                "enable.partition.eof": False,
                "topic.metadata.refresh.interval.ms": 5000,
            }
        )
        config.setdefault("logger", CLIENT_LOGGER)
        config.update(self.consumer_config)
        config.update(extra)
        config["group.id"] = group
        config["enable.auto.offset.store"] = False
        return config

    def admin(self) -> dict[str, Any]:
        return self.common_config()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaOptions:
        """``kafka://[user:password@]host:port[,host:port][?librdkafka.key=value&...]``.

        User info becomes SASL credentials (PLAIN over SASL_PLAINTEXT unless the query or
        options say otherwise); query parameters go to ``client_config``; keyword options
        are this class's fields.
        """
        parts = urlsplit(url)
        netloc = parts.netloc
        username = password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, _, pw = userinfo.partition(":")
            username, password = unquote(user), unquote(pw)
        if not netloc:
            raise ConfigurationError(
                "a kafka URL needs a host, e.g. 'kafka://127.0.0.1:9092' (got no host)"
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        client_config = {**query, **dict(options.pop("client_config", {}) or {})}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown Kafka option(s) {unknown}; known: {sorted(known)}. "
                "Pass librdkafka settings in client_config={...}"
            )
        if username is not None:
            options.setdefault("sasl_username", username)
            options.setdefault("sasl_password", password)
            options.setdefault("sasl_mechanism", client_config.pop("sasl.mechanism", "PLAIN"))
            options.setdefault(
                "security_protocol", client_config.pop("security.protocol", "SASL_PLAINTEXT")
            )
        options.setdefault("bootstrap_servers", netloc)
        return cls(client_config=client_config, **options)


@dataclass(frozen=True, slots=True, repr=False)
class KafkaSubscriptionOptions:
    """Per-subscription Kafka settings.

    ``group`` overrides the consumer group (by default the subscription's action, as in Go).
    ``consumer_config`` is passed to librdkafka's consumer for this subscription only.
    ``buffer``: how many fetched records may wait locally before fetching pauses.
    """

    group: str | None = None
    consumer_config: Mapping[str, Any] = field(default_factory=dict)
    buffer: int = 2000

    def __post_init__(self) -> None:
        if self.group is not None and (not isinstance(self.group, str) or not self.group):
            raise ConfigurationError("KafkaSubscriptionOptions.group must be a non-empty string")
        _check_config("consumer_config", self.consumer_config)
        for key, why in _FORBIDDEN_CONSUMER.items():
            if key in self.consumer_config and key != "enable.auto.offset.store":
                raise ConfigurationError(
                    f"KafkaSubscriptionOptions: do not set {key!r}: {why}"
                    + ("; use KafkaSubscriptionOptions(group=...)" if key == "group.id" else "")
                )
        if not isinstance(self.buffer, int) or self.buffer < 1:
            raise ConfigurationError("KafkaSubscriptionOptions.buffer must be an integer >= 1")

    def __repr__(self) -> str:
        return (
            f"KafkaSubscriptionOptions(group={self.group!r}, "
            f"consumer_config={redact(self.consumer_config)!r}, buffer={self.buffer})"
        )
