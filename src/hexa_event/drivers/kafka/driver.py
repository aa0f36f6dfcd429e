"""``kafka://``: the Kafka driver (confluent-kafka / librdkafka behind an asyncio bridge).

- Emit: one idempotent producer (acks=all) per driver; ``publish`` returns after the
  broker acknowledged every record. Keys are partitioned like sarama's default producer
  (``fnv1a_random``), so Go hexa-event and Python producers of one key keep its order.
- Topics: created on first use when ``KafkaOptions.provision`` is on (the default);
  otherwise a missing topic raises :class:`~hexa_event.errors.ChannelNotFoundError`.
- Receive: one consumer group per subscription (the action, or
  ``KafkaSubscriptionOptions.group``), cooperative-sticky rebalancing, offsets committed
  only up to the lowest unfinished record (see :mod:`.consumer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ...driver import Driver, Features, RawRecord, Subscription, SubscriptionSpec
from ...errors import ChannelNotFoundError, ClosedError, ConfigurationError, DriverError
from .consumer import KafkaSubscription
from .options import KafkaOptions, KafkaSubscriptionOptions
from .producer import KafkaProducer

log = logging.getLogger(__name__)

_METADATA_TIMEOUT = 10.0
_TOPIC_VISIBLE_TIMEOUT = 15.0


class KafkaDriver(Driver):
    """The Kafka driver. Build it with ``hexa_event.connect("kafka://host:9092", ...)``."""

    features = Features(
        name="kafka",
        persistent=True,
        consumer_groups=True,
        ordered_per_key=True,
        patterns=True,
        native_delayed_redelivery=False,
        exclusive_subscriptions=False,
        new_group_reads_history=True,
        restartable=True,
    )

    def __init__(self, options: KafkaOptions | None = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise ConfigurationError("pass either KafkaOptions or keyword options, not both")
        self.options = options if options is not None else KafkaOptions(**kwargs)
        self._admin: AdminClient | None = None
        self._producer = KafkaProducer(
            self.options.producer(),
            ensure_topics=self._ensure_topics_for_publish,
            error_cb=self._on_producer_error,
        )
        self._error_logged: dict[int, float] = {}
        self.last_error: str | None = None
        """The last error the producer's librdkafka reported (e.g. broker unreachable)."""
        self._subscriptions: set[KafkaSubscription] = set()
        self._known_topics: set[str] = set()
        self._provision_lock = asyncio.Lock()
        self._closed = False

    def _on_producer_error(self, err: KafkaError) -> None:
        self.last_error = f"{err.name()}: {err.str()}"
        now = time.monotonic()
        if now - self._error_logged.get(err.code(), 0.0) >= 10.0:
            self._error_logged[err.code()] = now
            log.warning("Kafka producer: %s (librdkafka retries with backoff)", self.last_error)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaDriver:
        """``kafka://[user:password@]host:port[,host:port][?librdkafka.key=value...]``."""
        if "options" in options:
            given = options.pop("options")
            if options:
                raise ConfigurationError("pass either options=KafkaOptions(...) or keywords")
            return cls(given)
        return cls(KafkaOptions.from_url(url, **options))

    def __repr__(self) -> str:
        return f"KafkaDriver({self.options!r})"

    # -- admin ---------------------------------------------------------------------------------

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.options.admin())
        return self._admin

    async def topic_partitions(self, topics: Sequence[str]) -> dict[str, int]:
        """Partition counts of the given topics that exist (missing ones are left out)."""
        admin = self._admin_client()

        def describe() -> dict[str, int]:
            try:
                metadata = admin.list_topics(timeout=_METADATA_TIMEOUT)
            except KafkaException as exc:
                raise DriverError(
                    f"cannot read Kafka metadata from {self.options.bootstrap_servers}: "
                    f"{exc.args[0].str()}"
                ) from None
            found = {}
            for name in topics:
                topic = metadata.topics.get(name)
                if topic is not None and topic.error is None and topic.partitions:
                    found[name] = len(topic.partitions)
            return found

        return await asyncio.to_thread(describe)

    async def provision(self, channels: Sequence[str]) -> None:
        """Create the missing topics (``partitions``/``replication_factor`` of the options).

        Topics created together get the partition count of the largest existing one among
        them (so retry topics match their main topic), else ``KafkaOptions.partitions``.
        With provisioning off, raises ChannelNotFoundError for the first missing topic.
        """
        if all(c in self._known_topics for c in channels):
            return
        async with self._provision_lock:  # concurrent callers share one check per topic
            await self._provision(channels)

    async def _provision(self, channels: Sequence[str]) -> None:
        wanted = [c for c in dict.fromkeys(channels) if c not in self._known_topics]
        if not wanted:
            return
        existing = await self.topic_partitions(wanted)
        self._known_topics.update(existing)
        missing = [c for c in wanted if c not in existing]
        if not missing:
            return
        if not self.options.provision:
            raise ChannelNotFoundError(
                missing[0],
                "create the topic, or let the driver create it with KafkaOptions(provision=True)",
            )
        partitions = max(existing.values(), default=self.options.partitions)
        admin = self._admin_client()
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=self.options.replication_factor,
                config=dict(self.options.topic_config),
            )
            for name in missing
        ]
        futures = admin.create_topics(new, operation_timeout=10, request_timeout=15)
        for name, future in futures.items():
            try:
                await asyncio.wrap_future(future)
                log.info("created Kafka topic %r (%d partitions)", name, partitions)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise DriverError(
                        f"cannot create Kafka topic {name!r}: {err.str()}",
                        retriable=err.retriable(),
                    ) from None
        await self._wait_visible(missing)
        self._known_topics.update(missing)

    async def _wait_visible(self, topics: Sequence[str]) -> None:
        deadline = time.monotonic() + _TOPIC_VISIBLE_TIMEOUT
        while True:
            found = await self.topic_partitions(topics)
            if len(found) == len(set(topics)):
                return
            if time.monotonic() > deadline:
                raise DriverError(
                    f"Kafka topics {sorted(set(topics) - set(found))} were "
                    "created but do not show in metadata"
                )
            await asyncio.sleep(0.1)

    async def _ensure_topics_for_publish(self, topics: Sequence[str]) -> None:
        await self.provision(topics)

    # -- the contract --------------------------------------------------------------------------

    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Produce ``records``; return once Kafka acknowledged all of them (acks=all)."""
        if self._closed:
            raise ClosedError("the Kafka driver is closed")
        await self._producer.publish(records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join ``spec.group`` (or ``KafkaSubscriptionOptions.group``) on the channels."""
        if self._closed:
            raise ClosedError("the Kafka driver is closed")
        sub_options = spec.options
        if sub_options is not None and not isinstance(sub_options, KafkaSubscriptionOptions):
            raise ConfigurationError(
                "Kafka subscriptions take KafkaSubscriptionOptions, got "
                f"{type(sub_options).__name__}"
            )
        if spec.channels:
            await self.provision(spec.channels)
        subscription = KafkaSubscription(self.options, spec, sub_options)
        await subscription.start()
        self._subscriptions.add(subscription)
        return subscription

    async def close(self) -> None:
        """Close the subscriptions, flush the producer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        self._subscriptions.clear()
        await self._producer.close(self.options.delivery_timeout)
