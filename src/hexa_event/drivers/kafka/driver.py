"""``kafka://``: the Kafka driver (confluent-kafka / librdkafka behind an asyncio bridge).

Emit through one idempotent producer (:mod:`.producer`), receive in consumer groups
(:mod:`.consumer`), topics created on first use when ``KafkaOptions.provision`` is on.
Design: docs/engines/kafka.md, section "Internals".
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from ...driver import Features, Finding, RawRecord, Subscription, SubscriptionSpec
from ...errors import ChannelNotFoundError, ConfigurationError, DriverError, InvalidEventError
from ...redaction import scrubber
from ..kit.driver import KitDriver
from ..kit.findings import channel_finding, group_finding, group_state
from .consumer import KafkaSubscription
from .lag import describe_group, group_lag
from .member import in_daemon
from .options import KafkaOptions, KafkaSubscriptionOptions
from .producer import KafkaProducer

log = logging.getLogger(__name__)

_TOPIC_VISIBLE_TIMEOUT = 15.0
_VISIBLE_FIRST_PAUSE = 0.005
_VISIBLE_MAX_PAUSE = 0.1
"""Pauses between metadata lookups until created topics show (4 starts in 10 paid a whole
100 ms pause when the first lookup came a few milliseconds early)."""
_FAILURE_HOLD = 2.0
"""Seconds a failed metadata lookup is reused instead of asking the broker again."""
_ADMIN_DESTROY_TIMEOUT = 10.0
"""Seconds close() waits for librdkafka to destroy the admin client before going on."""
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def topic_problem(name: object) -> str | None:
    """Why ``name`` cannot be a Kafka topic, or None when it can."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if name in (".", ".."):
        return f"cannot be {name!r} (Kafka refuses it as a topic name)"
    if not _TOPIC_NAME.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._-]", c)})
        what = f"characters {bad!r}" if bad else "more than 249 characters"
        return (
            f"{name!r} has {what}: a Kafka topic name uses only letters, digits, '.', '_' "
            "and '-', at most 249 of them; rename the channel"
        )
    return None


class KafkaDriver(KitDriver):
    """The Kafka driver. Build it with ``hexa_event.connect("kafka://host:9092", ...)``."""

    features = Features(name="kafka", persistent=True)
    options_type = KafkaOptions

    def __init__(self, options: KafkaOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.options: KafkaOptions = self.options_of(options, kwargs)
        self._admin: AdminClient | None = None
        self._scrub = scrubber(self.options.common_config())
        self._metadata_failure: tuple[float, DriverError] | None = None
        self._producer = KafkaProducer(
            self.options.producer(),
            error_cb=self._on_producer_error,
            scrub=self._scrub,
            # A topic deleted since it was provisioned: the next publish makes it again.
            forget=lambda topic: self.channels.pop(topic, None),
        )
        self._error_logged: dict[int, float] = {}
        self.last_error: str | None = None
        """The last error the producer's librdkafka reported (e.g. broker unreachable)."""
        self._admin_error: str | None = None

    def _on_producer_error(self, err: KafkaError) -> None:
        self.last_error = f"{err.name()}: {self._scrub(err.str())}"
        now = time.monotonic()
        if now - self._error_logged.get(err.code(), 0.0) >= 10.0:
            self._error_logged[err.code()] = now
            log.warning("Kafka producer: %s (librdkafka retries with backoff)", self.last_error)

    # -- admin ---------------------------------------------------------------------------------

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            config = self.options.admin()
            config["error_cb"] = self._on_admin_error
            try:
                self._admin = AdminClient(config)
            except KafkaException as exc:
                raise DriverError(
                    f"cannot create the Kafka admin client: {self._scrub(exc.args[0].str())}",
                    retriable=False,
                ) from None
        return self._admin

    def _on_admin_error(self, err: KafkaError) -> None:
        """The broker's reason (authentication, certificate...) behind a failed request."""
        self._admin_error = f"{err.name()}: {self._scrub(err.str())}"

    async def topic_partitions(self, topics: Sequence[str]) -> dict[str, int]:
        """Partition counts of the given topics that exist (missing ones, and ones the
        broker refuses to describe to us, are left out), from one request naming them."""
        failure = self._metadata_failure
        if failure is not None and time.monotonic() - failure[0] < _FAILURE_HOLD:
            raise failure[1]
        names = list(dict.fromkeys(topics))
        if not names:
            return {}
        admin = self._admin_client()
        timeout = self.options.metadata_timeout

        def describe() -> dict[str, int]:
            # One request for all of them (docs/engines/kafka.md, "Latency").
            futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout)
            found: dict[str, int] = {}
            for name, future in futures.items():
                try:
                    if partitions := future.result().partitions:
                        found[name] = len(partitions)
                except KafkaException as exc:
                    # Left out: the broker's answer (unknown topic, not authorized...).
                    if exc.args[0].code() < 0:  # local: no answer (timed out, transport)
                        raise
            return found

        try:
            found = await asyncio.to_thread(describe)
        except KafkaException as exc:
            admin.poll(0)  # forward librdkafka's queued log lines and errors
            error = self._unreachable(timeout, exc, self._admin_error or self.last_error)
            self._metadata_failure = (time.monotonic(), error)
            raise error from None
        admin.poll(0)
        self._metadata_failure = None
        return found

    def _unreachable(self, timeout: float, exc: KafkaException, cause: str | None) -> DriverError:
        """A metadata request failed: the broker is down, elsewhere, or refuses us."""
        return DriverError(
            f"cannot read Kafka metadata from {self.options.bootstrap_servers} within "
            f"{timeout:g} s ({self._scrub(exc.args[0].str())}"
            + (f"; the broker said: {cause}" if cause else "")
            + "): is the broker running and reachable at that address, and do the "
            "security settings (TLS certificates, SASL user and password) match it?"
        )

    async def create_channels(self, channels: Sequence[str]) -> dict[str, int]:
        """The topics' partition counts, creating the missing ones with the partition count
        of the largest existing one among them, else ``KafkaOptions.partitions``;
        ChannelNotFoundError when provisioning is off, ConfigurationError for a name Kafka
        refuses."""
        for channel in channels:
            if (problem := topic_problem(channel)) is not None:
                raise ConfigurationError(f"channel {problem}")
        existing = await self.topic_partitions(channels)
        missing = [c for c in channels if c not in existing]
        if not missing:
            return existing
        if not self.options.provision:
            raise ChannelNotFoundError(
                missing[0],
                "create the topic, or let the driver create it with KafkaOptions(provision=True)",
            )
        partitions = max(existing.values(), default=self.options.partitions)
        replicas, config = self.options.replication_factor, dict(self.options.topic_config)
        new = [NewTopic(name, partitions, replicas, config=config) for name in missing]
        futures = self._admin_client().create_topics(new, operation_timeout=10, request_timeout=15)
        await self._topic_requests(futures, "create", KafkaError.TOPIC_ALREADY_EXISTS)
        log.info("created Kafka topics %s (%d partitions)", missing, partitions)
        await self._wait_visible(missing)
        await self._producer.learn(missing, self.options.metadata_timeout)
        return {**existing, **dict.fromkeys(missing, partitions)}

    async def delete_channels(self, channels: Sequence[str]) -> None:
        """Delete the topics (a missing one is no error)."""
        futures = self._admin_client().delete_topics(
            list(channels), operation_timeout=10, request_timeout=15
        )
        await self._topic_requests(futures, "delete", KafkaError.UNKNOWN_TOPIC_OR_PART)

    async def _topic_requests(
        self, futures: Mapping[str, Future[None]], verb: str, harmless: int
    ) -> None:
        """Await the admin client's per-topic ``futures``; DriverError for the first that
        failed with another error than ``harmless`` (already there, already gone)."""
        for name, future in futures.items():
            try:
                await asyncio.wrap_future(future)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != harmless:
                    raise DriverError(
                        f"cannot {verb} Kafka topic {name!r}: {self._scrub(err.str())}",
                        retriable=err.retriable(),
                    ) from None

    async def _wait_visible(self, topics: Sequence[str]) -> None:
        """Return once metadata shows the just created ``topics`` (the brokers learn of
        them a few milliseconds after the create answered): asked again after 5 ms, the
        pause doubling up to 100 ms; DriverError after ``_TOPIC_VISIBLE_TIMEOUT``."""
        deadline = time.monotonic() + _TOPIC_VISIBLE_TIMEOUT
        pause = _VISIBLE_FIRST_PAUSE
        while True:
            found = await self.topic_partitions(topics)
            if len(found) == len(set(topics)):
                return
            if time.monotonic() > deadline:
                raise DriverError(
                    f"Kafka topics {sorted(set(topics) - set(found))} were "
                    "created but do not show in metadata"
                )
            await asyncio.sleep(pause)
            pause = min(2 * pause, _VISIBLE_MAX_PAUSE)

    async def check(self, within: float = 10.0) -> str:
        """librdkafka accepts the configuration (producer, consumer and admin settings, as
        publish and subscribe make them) and the cluster answers a metadata request."""
        return (await self._probe(within))[2]

    async def diagnose(
        self, channels: Sequence[str], groups: Sequence[str], within: float = 10.0
    ) -> list[Finding]:
        """The check, then each channel's topic (in the check's metadata) and each group
        (read-only)."""
        admin, metadata, seen = await self._probe(within)
        found = [Finding("driver", "ok", seen), Finding("kafka metadata", "ok", seen)]
        found += [_topic(c, metadata.topics.get(c), self.options.provision) for c in channels]
        if groups:
            found.extend(await _groups(admin, groups, within))
        return found

    async def _probe(self, within: float) -> tuple[AdminClient, Any, str]:
        """An admin client of the options (after the producer and consumer settings were
        accepted), the cluster's metadata and its summary; what :meth:`check` raises otherwise."""
        try:
            Producer(self.options.producer())
            Consumer({**self.options.common_config(), "group.id": "hexa-event-doctor"})
            admin = AdminClient(self.options.admin())
        except KafkaException as exc:
            raise ConfigurationError(
                f"librdkafka refuses these options: {self._scrub(exc.args[0].str())}; fix or "
                "drop that option in the URL (kafka://host:9092?librdkafka.key=value)"
            ) from None
        try:
            metadata = await asyncio.to_thread(admin.list_topics, timeout=within)
        except KafkaException as exc:
            raise self._unreachable(within, exc, None) from None
        seen = f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics visible"
        return admin, metadata, seen

    # -- the contract --------------------------------------------------------------------------

    def validate(self, records: Sequence[RawRecord]) -> None:
        """Channels that cannot be Kafka topic names (the known ones were checked)."""
        known = self.channels
        for record in records:
            if record.channel not in known and (problem := topic_problem(record.channel)):
                raise InvalidEventError("channel", problem)

    async def send(self, records: Sequence[RawRecord]) -> None:
        """Produce ``records``; return once Kafka acknowledged all of them (acks=all)."""
        await self._producer.publish(records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join ``spec.group`` (or ``KafkaSubscriptionOptions.group``) on the channels."""
        self.check_open()
        sub_options = self.subscription_options(spec, KafkaSubscriptionOptions)
        if spec.channels:
            await self.provision(spec.channels)
        forget = self._delete_groups if spec.ephemeral else None
        lag_of = self._group_lag if self.options.group_lag else None
        sub = KafkaSubscription(self.options, spec, sub_options, self._scrub, forget, lag_of)
        self.subscriptions.add(sub)  # a close() while it joins ends the wait
        try:
            await sub.start()
        except BaseException:
            self.subscriptions.discard(sub)
            raise
        await self.keep(sub)
        return sub

    async def _group_lag(
        self, group: str, topics: Sequence[str], pattern: str | None, earliest: bool
    ) -> dict[str, int]:
        """The group's lag per topic (:func:`.lag.group_lag`, on a thread)."""
        admin = self._admin_client()
        timeout = self.options.metadata_timeout
        try:
            return await asyncio.to_thread(
                group_lag, admin, group, topics, pattern, earliest=earliest, timeout=timeout
            )
        except KafkaException as exc:
            raise DriverError(
                f"cannot read the lag of Kafka group {group!r}: {self._scrub(exc.args[0].str())}"
            ) from None

    async def _delete_groups(self, groups: Sequence[str]) -> None:
        """Delete throwaway consumer groups (their committed offsets) once they are empty;
        a failure is logged, never raised (the broker expires the offsets in the end)."""
        for group in groups:
            try:
                admin = self._admin_client()
                (future,) = admin.delete_consumer_groups([group], request_timeout=10).values()
                await asyncio.wrap_future(future)
            except Exception as exc:
                err = exc.args[0] if isinstance(exc, KafkaException) else None
                if err is None or err.code() != KafkaError.GROUP_ID_NOT_FOUND:
                    why = self._scrub(err.str() if err is not None else repr(exc))
                    log.warning("could not delete the throwaway Kafka group %r: %s", group, why)
            else:
                log.debug("deleted the throwaway Kafka group %r", group)

    async def close_engine(self) -> None:
        """Flush the producer, destroy the admin client."""
        await self._producer.close(self.options.delivery_timeout)
        # Dropping the admin client's last reference destroys it, which can wait for ever:
        # on a daemon thread, given up after a while (docs/engines/kafka.md, "Internals").
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.poll(0)
            holder = [admin]
            del admin  # the holder keeps the only reference: it is dropped off the loop
            loop, within = asyncio.get_running_loop(), _ADMIN_DESTROY_TIMEOUT
            if not await in_daemon(loop, holder.clear, "hexa-kafka-admin-destroy", within):
                log.warning(
                    "the Kafka admin client did not finish closing within %g s (librdkafka's "
                    "destroy is waiting on its threads); left behind on a daemon thread",
                    within,
                )


def _topic(channel: str, topic: Any, provision: bool) -> Finding:
    """The doctor's finding on ``channel``'s topic (None: it does not exist)."""
    name = f"topic {channel}"
    if topic is not None and topic.error is not None:
        fix = f"grant this principal DESCRIBE/READ/WRITE on topic {channel}"
        return Finding(name, "fail", f"not allowed to read it: {topic.error.str()}", fix, "auth")
    partitions = None if topic is None else len(topic.partitions)
    create = f"create topic {channel} (kafka-topics.sh --create --topic {channel})"
    return channel_finding(name, partitions, provision, create)


async def _groups(admin: AdminClient, groups: Sequence[str], within: float) -> list[Finding]:
    """The doctor's findings on the consumer ``groups``: new, or the topics each is on, its
    members, state and lag (:func:`.lag.describe_group`, :func:`.lag.group_lag`)."""
    fix = "grant DESCRIBE on the groups to see their state"
    try:
        listed = await asyncio.to_thread(
            lambda: admin.list_consumer_groups(request_timeout=within).result()
        )
        existing = {g.group_id for g in listed.valid}
    except Exception as exc:
        return [Finding("consumer groups", "warn", f"cannot list consumer groups: {exc}", fix)]
    found = []
    for group in groups:
        name = f"group {group}"
        if group not in existing:
            found.append(group_finding(name, None))
            continue
        try:
            found.append(await asyncio.to_thread(_group, admin, group, within))
        except Exception as exc:
            found.append(Finding(name, "warn", f"exists; cannot describe it: {exc}", fix))
    return found


def _group(admin: AdminClient, group: str, within: float) -> Finding:
    """The finding on ``group``, which exists (blocking: on a thread)."""
    state, members, topics = describe_group(admin, group, timeout=within)
    lag = group_lag(admin, group, topics, None, earliest=True, timeout=within)
    return group_state(f"group {group}", topics, members, lag, f"group {state}")
