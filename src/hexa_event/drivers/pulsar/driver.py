"""``pulsar://``: the Apache Pulsar driver (pulsar-client, the C++ client's binding): topics
created through the admin API when provisioning is on, emits through :mod:`.producer`,
the action as a Key_Shared subscription by default (:mod:`.consumer`). Behaviour and
options: docs/engines/pulsar.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any

import pulsar

from ...driver import Features, Finding, RawRecord, Subscription, SubscriptionSpec, refuse, vouched
from ...errors import ChannelNotFoundError, ConfigurationError, DriverError, NotStoredError
from ...redaction import redact_url
from ..kit.driver import KitDriver
from ..kit.findings import channel_finding, group_finding, group_state
from .admin import PulsarAdmin, backlog_of
from .consumer import PulsarSubscription, close_quietly
from .options import PulsarOptions, PulsarSubscriptionOptions
from .producer import PulsarProducers

log = logging.getLogger(__name__)


_BAD_TOPIC_CHARS = re.compile(r"[\s/?#\x00-\x1f\x7f]")
_PROVISION_AT_ONCE = 8
"""Most channels provisioned at the same time (admin calls in worker threads)."""


def channel_problem(channel: str) -> str | None:
    """Why Pulsar cannot carry ``channel`` as a topic's local name, or None. A ``/`` would
    move it under another namespace path; whitespace, control characters, ``?`` and ``#``
    break the admin API's URLs (HTTP 412) and the topic lookups."""
    found = _BAD_TOPIC_CHARS.search(channel)
    if found is None:
        return None
    return (
        f"{channel[:80]!r} cannot be a Pulsar topic name: it contains {found.group()!r}; "
        "use no whitespace, '/', '?', '#' or control characters"
    )


class PulsarDriver(KitDriver):
    """The Pulsar driver. Build it with ``hexa_event.connect("pulsar://host:6650", ...)``."""

    features = Features(
        name="pulsar",
        persistent=True,
        delayed_publish=True,
        scheduled_publish=True,
        delayed_nack=True,
        exclusive_subscriptions=True,
    )
    options_type = PulsarOptions

    def __init__(self, options: PulsarOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.options: PulsarOptions = self.options_of(options, kwargs)
        self._client = pulsar.Client(self.options.service_url, **self.options.client_kwargs())
        self._admin = PulsarAdmin(self.options)
        self._producers = PulsarProducers(self._client, self.options)

    # -- topics --------------------------------------------------------------------------------

    async def create_channels(self, channels: Sequence[str]) -> dict[str, int]:
        """Each topic's partition count (0: non-partitioned), creating the missing topics
        (or raising ChannelNotFoundError when provisioning is off). Up to
        ``_PROVISION_AT_ONCE`` channels at once, each in a worker thread (a receiver's start
        provisions 4-5, two or three admin calls each); once every one has been looked at,
        the first in ``channels`` that failed raises."""
        room = asyncio.Semaphore(_PROVISION_AT_ONCE)

        async def create(channel: str) -> int:
            async with room:
                return await asyncio.to_thread(self._create_channel, channel)

        found = await asyncio.gather(*map(create, channels), return_exceptions=True)
        partitions: dict[str, int] = {}
        for channel, result in zip(channels, found, strict=True):
            if isinstance(result, BaseException):
                raise result
            partitions[channel] = result
        return partitions

    def _create_channel(self, channel: str) -> int:
        admin = self._admin
        partitions = admin.partitions(channel)
        if partitions is None:
            if not self.options.provision:
                fix = f"create topic {self.options.topic(channel)!r}, or let the driver create it"
                raise ChannelNotFoundError(channel, f"{fix} with PulsarOptions(provision=True)")
            admin.create(channel, self.options.partitions)
            if channel.endswith(".dlq") and not admin.retain_forever(channel):
                log.warning(
                    "could not set unlimited retention on dead-letter topic %r; letters "
                    "may expire before anyone reads them (set namespace retention)",
                    channel,
                )
            partitions = admin.partitions(channel) or 0
            log.info("created Pulsar topic %r (%d partitions)", channel, partitions)
        return partitions

    async def delete_channels(self, channels: Sequence[str]) -> None:
        """Delete the topics through the admin API (a missing one is no error)."""
        for channel in channels:
            await asyncio.to_thread(self._admin.delete, channel)

    async def check(self, within: float = 10.0) -> str:
        """The admin API reads the namespace, and the broker answers a topic lookup over the
        binary protocol (the way producers and consumers connect; nothing is created)."""
        kwargs = {
            **self.options.client_kwargs(),
            "operation_timeout_seconds": max(1, int(within)),
            "connection_timeout_ms": max(1000, int(within * 1000)),
        }
        probe = self.options.topic("hexa-event-doctor-probe")

        def lookup() -> None:
            client = pulsar.Client(self.options.service_url, **kwargs)
            try:
                client.get_topic_partitions(probe)
            finally:
                client.close()

        status = await asyncio.to_thread(self._admin.namespace_status)
        where = f"{self.options.tenant}/{self.options.namespace}"
        if status in (401, 403):
            raise DriverError(
                f"the Pulsar admin API refused reading namespace {where} (HTTP {status}): pass "
                "a token with rights on it (pulsar://TOKEN@host:6650)",
                retriable=False,
            )
        if status != 200:
            raise ConfigurationError(
                f"Pulsar namespace {where} is not readable (HTTP {status}): create it "
                f"(pulsar-admin namespaces create {where}), or pass tenant= and namespace="
            )
        try:
            await asyncio.to_thread(lookup)
        except pulsar.PulsarException as exc:
            raise DriverError(
                f"the Pulsar broker at {redact_url(self.options.service_url)} did not answer "
                f"a topic lookup within {within:g} s ({exc}): is it a Pulsar broker's port "
                "(6650, not Kafka's or the admin API's), and are the token and TLS settings right?"
            ) from None
        return f"broker answers; namespace {where} exists"

    async def diagnose(
        self, channels: Sequence[str], groups: Sequence[str], within: float = 10.0
    ) -> list[Finding]:
        """The check, then the channels' topics and the groups' subscriptions (read-only,
        through the admin API)."""
        found = await super().diagnose(channels, groups, within)
        return found + await asyncio.to_thread(self._findings, channels, groups)

    def _findings(self, channels: Sequence[str], groups: Sequence[str]) -> list[Finding]:
        options, admin = self.options, self._admin
        where = f"{options.tenant}/{options.namespace}"
        found = [Finding("pulsar admin API", "ok", f"namespace {where} exists")]
        existing: list[str] = []
        for channel in channels:
            name = f"topic {channel}"
            try:
                partitions = admin.partitions(channel)
            except Exception as exc:
                found.append(Finding(name, "warn", f"cannot read it: {exc}"))
                continue
            create = f"create topic {options.topic(channel)} (pulsar-admin topics create)"
            found.append(channel_finding(name, partitions, options.provision, create))
            if partitions is not None:
                existing.append(channel)
        for group in groups:
            name = f"subscription {group}"
            on = admin.subscription_stats(existing, group)
            if not on:
                found.append(group_finding(name, None))
                continue
            members = max(len(stats.get("consumers") or ()) for stats in on.values())
            lag = {channel: backlog_of(stats) for channel, stats in on.items()}
            found.append(group_state(name, list(on), members, lag))
        return found

    # -- the contract --------------------------------------------------------------------------

    def validate(self, records: Sequence[RawRecord]) -> None:
        """Channels that cannot be Pulsar topic names (each channel checked once)."""
        bad = {c: p for c in {r.channel for r in records} if (p := channel_problem(c))}
        if bad:
            problems = {
                i: NotStoredError(f"channel {bad[record.channel]}", limit="topic name")
                for i, record in enumerate(records)
                if record.channel in bad
            }
            raise refuse(len(records), problems)

    async def send(self, records: Sequence[RawRecord]) -> None:
        """Send ``records``; return once Pulsar confirmed every one of them."""
        text = vouched(records, self) and records.text
        await self._producers.publish(records, self.channels, text=text)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join subscription ``spec.group`` (Key_Shared unless the options say otherwise);
        SubscriptionBusyError, naming the subscription, its type and the fix, when Pulsar
        refuses the consumer (a second Exclusive member, or a member of another type)."""
        self.check_open()
        sub_options = self.subscription_options(spec, PulsarSubscriptionOptions)
        sub_options = sub_options or PulsarSubscriptionOptions()
        if not spec.channels and spec.pattern is None:
            raise ConfigurationError("a Pulsar subscription needs channels or a pattern")
        for channel in spec.channels:
            if problem := channel_problem(channel):
                raise ConfigurationError(f"channel {problem}")
        await self.provision(spec.channels)
        subscription = PulsarSubscription(
            self._client, self.options, spec, sub_options, self.subscriptions.discard, self._admin
        )
        await subscription.start()
        await self.keep(subscription)
        return subscription

    async def close_engine(self) -> None:
        """Close the producers, then the client."""
        await self._producers.close()
        await asyncio.to_thread(close_quietly, self._client)
