"""Typed options of the Pulsar driver. What is not modelled passes through unchanged
(``client_config``, ``producer_config``, ``consumer_config``), except the settings the
driver's guarantees depend on; secrets never appear in reprs, logs or errors."""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import ConfigurationError
from ...numbers import check_number
from ..kit import options as kit
from ..kit.query import coerce

CLIENT_LOGGER = logging.getLogger("hexa_event.drivers.pulsar.client")
"""pulsar-client's own (C++) log lines with ``client_log="logging"``."""

CLIENT_QUERY: dict[str, type] = {
    "io_threads": int,
    "message_listener_threads": int,
    "concurrent_lookup_requests": int,
    "stats_interval_in_seconds": int,
    "use_tls": bool,
    "log_conf_file_path": str,
    "listener_name": str,
}
"""``pulsar.Client`` keywords a URL query may give (typed) besides this module's fields;
they go to ``client_config``."""

_KEYWORDS = "pulsar-client keywords"

# Settings the driver owns because its guarantees depend on them.
_FORBIDDEN_CONSUMER = {
    "subscription_name": "the subscription is the action (or PulsarSubscriptionOptions.name)",
    "consumer_type": "use PulsarSubscriptionOptions(type=SubscriptionType.SHARED...)",
    "topic": "the channels come from the receiver's subscribe()",
    "is_pattern_topic": "pass pattern= to the receiver's subscribe()",
    "pattern_auto_discovery_period": "use PulsarSubscriptionOptions(pattern_discovery=...)",
    "initial_position": "the subscription's start= decides it",
    "dead_letter_policy": "dead letters are the core's (<action>.dlq, with error headers)",
    "negative_ack_redelivery_delay_ms": "use PulsarSubscriptionOptions(nack_delay=...)",
    "unacked_messages_timeout_ms": "use PulsarSubscriptionOptions(ack_timeout=...)",
}
_FORBIDDEN_PRODUCER = {
    "topic": "the channel comes from the event",
    "message_router": "keys are routed by the driver's stable hash (see partition_for_key)",
    "block_if_queue_full": "a full queue would block the event loop; the driver windows sends",
}


class SubscriptionType(enum.Enum):
    """Pulsar subscription types the driver offers (the Go library's ``Type`` extra).

    ``KEY_SHARED`` (the default): members of one action share the work, each key goes to one
    member at a time in publish order. ``SHARED``: round-robin, no order per key.
    ``FAILOVER``: one active member per partition, the others stand by. ``EXCLUSIVE``: one
    member only; a second one is refused with SubscriptionBusyError.
    """

    KEY_SHARED = "Key_Shared"
    SHARED = "Shared"
    FAILOVER = "Failover"
    EXCLUSIVE = "Exclusive"


@dataclass(frozen=True, slots=True, repr=False)
class PulsarOptions(kit.DriverOptions):
    """How the driver talks to Pulsar; each field is described in docs/engines/pulsar.md,
    "Connecting and options". URL: ``pulsar://[token@]host:6650[?query]`` (``pulsar+ssl://``
    for TLS): the user info is the token; query options are these fields or the
    ``pulsar.Client`` keywords of :data:`CLIENT_QUERY` (to ``client_config``)."""

    engine = "Pulsar"
    example = "pulsar://127.0.0.1:6650"
    client_hint = "Pass pulsar-client settings in client_config={...}"
    passthrough_hint = f"pulsar.Client settings: {', '.join(sorted(CLIENT_QUERY))}"
    masked_fields = ("token", "authentication")
    url_fields = ("service_url", "admin_url")

    service_url: str = "pulsar://127.0.0.1:6650"
    admin_url: str = "http://127.0.0.1:8080"
    tenant: str = "public"
    namespace: str = "default"
    provision: bool = True
    partitions: int = 1
    body: Literal["native", "go"] = "native"
    send_timeout: float = 30.0
    max_in_flight: int = 5000
    batching_delay_ms: int = 5
    operation_timeout: float = 30.0
    connection_timeout: float = 10.0
    token: str | None = None
    authentication: Any = None
    tls_trust_certs_file_path: str | None = None
    tls_allow_insecure_connection: bool = False
    tls_validate_hostname: bool = False
    tls_certificate_file_path: str | None = None
    tls_private_key_file_path: str | None = None
    client_log: Literal["stderr", "logging"] = "stderr"
    client_config: Mapping[str, Any] = field(default_factory=dict)
    producer_config: Mapping[str, Any] = field(default_factory=dict)
    consumer_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "PulsarOptions"
        kit.check_choice(owner, "client_log", self.client_log, ("stderr", "logging"))
        if not isinstance(self.service_url, str) or "://" not in self.service_url:
            raise ConfigurationError(
                f"{owner}.service_url must be a URL such as 'pulsar://127.0.0.1:6650'"
            )
        if "@" in self.service_url.split("://", 1)[1].split("/", 1)[0]:
            # pulsar-client refuses it, naming the whole host part (the secret too).
            raise ConfigurationError(
                f"{owner}.service_url must not carry credentials before '@': pass the token "
                "as token= (connect('pulsar://TOKEN@host:6650') moves it there for you)"
            )
        if not isinstance(self.admin_url, str) or not self.admin_url.startswith("http"):
            raise ConfigurationError(
                f"{owner}.admin_url must be the HTTP admin URL, e.g. 'http://127.0.0.1:8080'"
            )
        for name in ("tenant", "namespace"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "/" in value:
                raise ConfigurationError(f"{owner}.{name} must be a non-empty name without '/'")
        kit.check_count(owner, "partitions", self.partitions)
        kit.check_choice(owner, "body", self.body, ("native", "go"))
        # int32 ms; a send_timeout under 1 ms is 0 ms: pulsar-client waits for ever then.
        for name, low in (("send_timeout", 0.001), ("connection_timeout", 1)):
            value = getattr(self, name)
            check_number(f"{owner}.{name}", value, minimum=low, maximum=kit.INT32 / 1e3)
        check_number(
            f"{owner}.operation_timeout", self.operation_timeout, minimum=1, maximum=kit.INT32
        )
        kit.check_count(owner, "max_in_flight", self.max_in_flight, maximum=kit.INT32)
        kit.check_count(owner, "batching_delay_ms", self.batching_delay_ms, minimum=0)
        if self.token is not None and self.authentication is not None:
            raise ConfigurationError(f"{owner}: pass token= or authentication=, not both")
        for name, forbidden in (
            ("client_config", {}),
            ("producer_config", _FORBIDDEN_PRODUCER),
            ("consumer_config", _FORBIDDEN_CONSUMER),
        ):
            kit.check_mapping(owner, name, getattr(self, name), forbidden, what=_KEYWORDS)

    def topic(self, channel: str) -> str:
        """The full topic name of ``channel``."""
        return f"persistent://{self.tenant}/{self.namespace}/{channel}"

    def admin_headers(self) -> dict[str, str]:
        """HTTP headers for the admin API (the bearer token when one is set)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client_kwargs(self) -> dict[str, Any]:
        """Keywords for ``pulsar.Client`` (auth, TLS and timeouts, then ``client_config``)."""
        import pulsar  # the extra is only needed once a driver is made

        kwargs: dict[str, Any] = {
            "operation_timeout_seconds": int(self.operation_timeout),
            "connection_timeout_ms": int(self.connection_timeout * 1000),
            "tls_allow_insecure_connection": self.tls_allow_insecure_connection,
            "tls_validate_hostname": self.tls_validate_hostname,
            "logger": (
                CLIENT_LOGGER
                if self.client_log == "logging"
                else pulsar.FileLogger(pulsar.LoggerLevel.Warn, "/dev/stderr")
            ),
        }
        if self.token is not None:
            kwargs["authentication"] = pulsar.AuthenticationToken(self.token)
        elif self.authentication is not None:
            kwargs["authentication"] = self.authentication
        for name in ("tls_trust_certs", "tls_certificate", "tls_private_key"):
            if (path := getattr(self, f"{name}_file_path")) is not None:
                kwargs[f"{name}_file_path"] = path
        kwargs.update(self.client_config)
        return kwargs

    @classmethod
    def passes_through(cls, key: str) -> bool:
        return key in CLIENT_QUERY

    @classmethod
    def from_parts(cls, fields: dict[str, Any], url: kit.ParsedUrl) -> None:
        if url.user is not None:  # the whole user info is the token
            token = url.user if url.password is None else f"{url.user}:{url.password}"
            fields.setdefault("token", token)
        client_config = fields["client_config"] = dict(fields.get("client_config") or {})
        for key, raw in url.passed:
            client_config.setdefault(key, coerce("Pulsar", key, raw, CLIENT_QUERY[key]))
        if url.parts.hostname is not None:
            fields.setdefault("admin_url", f"http://{url.parts.hostname}:8080")
        scheme = "pulsar+ssl" if url.parts.scheme == "pulsar+ssl" else "pulsar"
        fields.setdefault("service_url", f"{scheme}://{url.hosts}")


@dataclass(frozen=True, slots=True, repr=False)
class PulsarSubscriptionOptions(kit.Redacted):
    """Per-subscription Pulsar settings (docs/engines/pulsar.md, "Connecting and options"):
    ``nack_delay`` at least 0.1 s, ``ack_timeout`` 0 (never) or at least 10 s."""

    type: SubscriptionType = SubscriptionType.KEY_SHARED
    name: str | None = None
    receiver_queue_size: int = 1000
    nack_delay: float = 0.1
    ack_timeout: float = 0.0
    pattern_discovery: int = 5
    consumer_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "PulsarSubscriptionOptions"
        kit.check_count(owner, "pattern_discovery", self.pattern_discovery)
        if not isinstance(self.type, SubscriptionType):
            raise ConfigurationError(
                f"{owner}.type must be a SubscriptionType (KEY_SHARED, SHARED, FAILOVER, "
                f"EXCLUSIVE), got {self.type!r}"
            )
        kit.check_name(owner, "name", self.name, optional=True)
        kit.check_count(owner, "receiver_queue_size", self.receiver_queue_size, maximum=kit.INT32)
        check_number(f"{owner}.nack_delay", self.nack_delay, minimum=0.1)
        check_number(f"{owner}.ack_timeout", self.ack_timeout)
        if 0 < self.ack_timeout < 10:
            raise ConfigurationError(f"{owner}.ack_timeout must be 0 (off) or >= 10 seconds")
        kit.check_mapping(
            owner, "consumer_config", self.consumer_config, _FORBIDDEN_CONSUMER, what=_KEYWORDS
        )
