"""``nats://``: the NATS JetStream driver (nats-py): one connection, reconnecting forever,
one stream, a durable pull consumer per action (per partition with ``partitions=N``).
How it works: docs/engines/nats.md ("Internals" for the modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import weakref
from collections.abc import Sequence
from typing import Any

import nats.errors

from ...driver import ALL_CHANNELS, Features, Finding, RawRecord, Subscription, SubscriptionSpec
from ...errors import ConfigurationError, DriverError
from ...redaction import redact_text, redact_url
from ..kit.driver import KitDriver
from ..kit.findings import group_finding, group_state
from .client import Client
from .consumer import NatsSubscription
from .naming import channel_subject, consumer_name, partition_prefix, pattern_filter
from .options import NatsOptions, NatsSubscriptionOptions
from .partitioned import PartitionedSubscription
from .producer import NatsProducer
from .streams import ERR_STREAM_NOT_FOUND, UNACKED, JetStreamApi, JetStreamApiError, summed

log = logging.getLogger(__name__)

_ERROR_LOG_INTERVAL = 10.0


class NatsDriver(KitDriver):
    """The JetStream driver. Build it with ``hexa_event.connect("nats://host:4222", ...)``."""

    options_type = NatsOptions

    def __init__(self, options: NatsOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.options: NatsOptions = self.options_of(options, kwargs)
        delayed = self.options.delayed_publish
        self.features = Features(
            name="nats",
            persistent=True,
            ordered_per_key=self.options.partitions > 0,  # docs/engines/nats.md, "Order"
            delayed_publish=delayed,
            scheduled_publish=delayed,
            delayed_nack=True,
        )
        self._producer = NatsProducer(self.options)
        self._nc: Client | None = None
        self._api: JetStreamApi | None = None
        self._connect_lock = asyncio.Lock()
        self._stream_ready = False
        self.subscriptions: weakref.WeakSet[NatsSubscription | PartitionedSubscription] = (
            weakref.WeakSet()
        )
        self.connection_error = ""
        """What is wrong with the connection now (empty when connected)."""
        self._logged_at = 0.0

    # -- the connection -----------------------------------------------------------------------

    async def connection(self) -> Client:
        """The connected nats-py client (connects, and creates the stream, on first use)."""
        self.check_open()
        nc = self._nc
        if nc is not None and nc.is_closed:
            await self._on_closed()  # closed for good, its callback not run yet
            nc = None
        if nc is None or not self._stream_ready:
            async with self._connect_lock:
                self.check_open()
                if self._nc is None:
                    self._nc = await self._connect()
                    self._api = JetStreamApi(self._nc, self.options.request_timeout)
                if not self._stream_ready:
                    assert self._api is not None
                    await self._api.ensure_stream(self.options)
                    if self.options.partitions:
                        await self._api.ensure_members_bucket(self.options)
                    self._stream_ready = True
                nc = self._nc
        return nc

    async def _connect(self, *, probe: bool = False) -> Client:
        """A new client; a ``probe`` one (for :meth:`check`) reports nothing to this driver."""
        o = self.options
        kwargs: dict[str, Any] = {
            "servers": list(o.servers),
            "name": o.name,
            "connect_timeout": o.connect_timeout,
            "reconnect_time_wait": o.reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "user": o.user,
            "password": o.password if o.user is not None else None,
            "token": o.token,
            "user_credentials": o.creds_file,
            "nkeys_seed": o.nkeys_seed,
            "tls": self._tls_context(),
            "tls_hostname": o.tls_hostname,
        }
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        if not probe:
            kwargs.update(
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
            )
        kwargs.update(o.client_options)
        if probe:
            kwargs.update(allow_reconnect=False, max_reconnect_attempts=0)
        nc = Client()
        # nats-py retries the first connect forever with max_reconnect_attempts=-1: bound it.
        bound = o.connect_timeout * 2 + o.reconnect_wait * 2
        try:
            async with asyncio.timeout(bound):
                await nc.connect(**kwargs)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            servers = ", ".join(redact_url(s) for s in o.servers)
            raise DriverError(
                f"cannot connect to NATS at {servers} within {bound:.0f}s: "
                f"{redact_text(str(exc)) or type(exc).__name__}; is the server running "
                "(scripts/services up nats) and are the credentials right?"
            ) from None
        if not probe:
            self.connection_error = ""
        return nc

    def _tls_context(self) -> ssl.SSLContext | None:
        o = self.options
        if not (o.tls_ca_file or o.tls_cert_file):
            return None
        context = ssl.create_default_context(cafile=o.tls_ca_file)
        if o.tls_cert_file:
            context.load_cert_chain(o.tls_cert_file, o.tls_key_file)
        return context

    async def check(self, within: float = 10.0) -> str:
        """Connect on a connection of its own, and check JetStream and the stream the way
        the first publish would, creating nothing."""
        return (await self.diagnose((), (), within))[0].detail

    async def diagnose(
        self, channels: Sequence[str], groups: Sequence[str], within: float = 10.0
    ) -> list[Finding]:
        """The check (JetStream, the stream's configuration against the options), then
        each group's durable consumer, on a connection of its own."""
        nc = await self._connect(probe=True)
        try:
            api = JetStreamApi(nc, min(within, self.options.request_timeout))
            found = [Finding("driver", "ok", await api.check_stream(self.options))]
            for group in groups:
                found.append(await self._group(api, group))
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
        return found

    async def _group(self, api: JetStreamApi, group: str) -> Finding:
        """The finding on ``group``'s durable consumer (each partition's, on a partitioned
        stream): new, or its pull requests waiting and its lag (pending plus delivered and
        not acked); on a partitioned stream also its live members (the leases in the
        members bucket). An unpartitioned consumer tells no members: a live member whose
        prefetch is full has no pull waiting, and a gone one leaves records unacked."""
        stream, name = self.options.stream, consumer_name(group)
        count = self.options.partitions
        consumers = [f"{name}%p{n}" for n in range(count)] if count else [name]
        try:
            infos = await api.consumer_infos(stream, consumers)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            infos = []
        if not infos:
            return group_finding(f"consumer {group}", None)
        members = len(await api.members(stream, name)) if count else None
        lag = {ALL_CHANNELS: summed(infos, *UNACKED)}
        waiting = f"{summed(infos, 'num_waiting')} pull request(s) waiting"
        return group_state(f"consumer {group}", (), members, lag, waiting)

    async def _on_error(self, exc: Exception) -> None:
        text = redact_text(str(exc)) or type(exc).__name__
        now = time.monotonic()
        if now - self._logged_at >= _ERROR_LOG_INTERVAL:
            self._logged_at = now
            log.warning("NATS client: %s (reconnecting)", text)
        if self._nc is not None and not self._nc.is_connected:
            self.connection_error = f"NATS connection lost: {text}; reconnecting"

    async def _on_disconnected(self) -> None:
        if self.closed:
            return
        servers = ", ".join(redact_url(s) for s in self.options.servers)
        self.connection_error = f"disconnected from NATS ({servers}); reconnecting"
        log.warning("%s", self.connection_error)

    async def _on_closed(self) -> None:
        """nats-py closed the connection for good (after a protocol error it does not
        reconnect): fail the members on it; the next publish opens a new connection."""
        nc = self._nc
        if self.closed or nc is None or not nc.is_closed:
            return
        cause = redact_text(str(nc.last_error)) if nc.last_error else "no reason given"
        reason = (
            f"the NATS connection was closed for good ({cause}); the receivers on it stopped: "
            "start them again (emits open a new connection)"
        )
        log.error("%s", reason)
        self.connection_error = reason
        self._nc = None
        self._api = None
        self._stream_ready = False
        self._producer.fail_pending(reason)
        for subscription in list(self.subscriptions):
            subscription.on_connection_closed(reason)
            self.subscriptions.discard(subscription)

    async def _on_reconnected(self) -> None:
        url = self._nc.connected_url if self._nc is not None else None
        log.info("reconnected to NATS at %s", redact_url(url.geturl()) if url else "?")
        self.connection_error = ""
        self._stream_ready = False  # a server that lost its store needs the stream again
        for subscription in list(self.subscriptions):
            subscription.renew()

    async def repair(self) -> None:
        """Create the stream (and bucket) again: the server lost them."""
        self._stream_ready = False
        await self.connection()

    # -- the contract --------------------------------------------------------------------------

    async def send(self, records: Sequence[RawRecord]) -> None:
        """Store ``records`` in the stream; return once JetStream acknowledged each."""
        nc = await self.connection()
        try:
            await self._producer.publish(nc, records)
        except DriverError as exc:
            if "no responders" in str(exc):
                self._stream_ready = False
            raise

    async def provision(self, channels: Sequence[str]) -> None:
        """Create the stream that holds every channel (subjects need no creation)."""
        del channels
        await self.connection()

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        """Join ``spec.group``'s durable pull consumer (created or updated as needed), or
        with partitions the action's members and their partitions' consumers."""
        options: NatsSubscriptionOptions = (
            self.subscription_options(spec, NatsSubscriptionOptions) or NatsSubscriptionOptions()
        )
        if options.failover and self.options.partitions:
            raise ConfigurationError(
                "NatsSubscriptionOptions(failover=True) is for unpartitioned streams: with "
                f"NatsOptions(partitions={self.options.partitions}) each partition already has "
                "one member at a time while the members share the partitions; drop failover"
            )
        self.filters(spec)  # refuse a spec without channels before connecting
        nc = await self.connection()
        assert self._api is not None
        kind = PartitionedSubscription if self.options.partitions else NatsSubscription
        name = options.durable or consumer_name(spec.group)
        subscription = kind(self, nc, self._api, spec, options, name)
        await subscription.start()
        await self.keep(subscription)
        return subscription

    def filters(self, spec: SubscriptionSpec, partition: int | None = None) -> list[str]:
        """The consumer's filter subjects for ``spec`` (in ``partition``; no two overlap)."""
        prefix = partition_prefix(self.options.subject_prefix, partition)
        if not spec.channels and not spec.pattern:
            raise ConfigurationError("a NATS subscription needs channels or a pattern")
        wide = pattern_filter(prefix, spec.pattern) if spec.pattern else None
        found: list[str] = [wide] if wide else []
        for subject in (channel_subject(prefix, channel) for channel in spec.channels):
            if not (wide and subject.startswith(wide[:-1])) and subject not in found:
                found.append(subject)
        return found

    async def close_engine(self) -> None:
        """Fail unconfirmed publishes, close the connection."""
        self._producer.fail_pending("the NATS driver was closed before JetStream confirmed")
        if self._nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.options.connect_timeout):
                    await self._nc.close()
