"""The JetStream API calls the driver makes (JSON to ``$JS.API.*``, each bounded by
``NatsOptions.request_timeout``): the stream, the membership bucket of a partitioned one,
the durable consumers and their info. Layout and what an existing stream keeps:
docs/engines/nats.md ("Emitting", "Internals").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client

from ...errors import ChannelNotFoundError, ConfigurationError, DriverError
from .options import NatsOptions, NatsSubscriptionOptions

log = logging.getLogger(__name__)

_NS = 1_000_000_000
ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
ERR_SUBJECTS_OVERLAP = 10065
ERR_CONSUMER_NOT_FOUND = 10014
ERR_CONSUMER_EXISTS = 10148
ERR_CONSUMER_NAME_EXISTS = 10013
ERR_MAX_CONSUMERS = 10026
PARTITIONS_KEY = "hexa_partitions"
"""Stream metadata entry that records ``NatsOptions.partitions``."""
PRIORITY_GROUP = "hexa"
"""The priority group of failover consumers (one pinned member at a time)."""
UNACKED = ("num_pending", "num_ack_pending")
"""A consumer info's counts of the records its group has not acknowledged: its lag."""


class JetStreamApiError(DriverError):
    """The JetStream API answered with an error (``code``, ``err_code``)."""

    def __init__(self, subject: str, code: int, err_code: int, description: str) -> None:
        self.code = code
        self.err_code = err_code
        super().__init__(
            f"JetStream {subject.removeprefix('$JS.API.')} failed: {description} "
            f"(code {code}, err_code {err_code})",
            retriable=code >= 500,
        )


class JetStreamApi:
    """Bounded JSON requests to ``$JS.API`` on one connection."""

    def __init__(self, nc: Client, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout

    async def request(self, subject: str, body: Mapping[str, Any] | None = None) -> Any:
        full = f"$JS.API.{subject}"
        payload = json.dumps(body).encode() if body is not None else b""
        try:
            reply = await self._nc.request(full, payload, timeout=self._timeout)
        except nats.errors.NoRespondersError:
            raise DriverError(
                "JetStream does not answer (no responders): is the server started with -js "
                "and is JetStream enabled for this account?"
            ) from None
        except (nats.errors.TimeoutError, TimeoutError):
            raise DriverError(
                f"JetStream {subject} got no answer within {self._timeout}s "
                "(NatsOptions.request_timeout); the server may be restarting"
            ) from None
        except nats.errors.Error as exc:
            raise DriverError(f"JetStream {subject} failed: {exc}") from None
        data = json.loads(reply.data) if reply.data else {}
        if error := data.get("error"):
            raise JetStreamApiError(
                full, int(error.get("code", 0)), int(error.get("err_code", 0)), error["description"]
            )
        return data

    # -- the stream ---------------------------------------------------------------------------

    async def ensure_stream(self, options: NatsOptions) -> None:
        """Create the driver's stream, or check and extend the existing one."""
        wanted = stream_config(options)
        name = options.stream
        try:
            if options.provision:
                self._check_version(options)
                created = await self.request(f"STREAM.CREATE.{name}", wanted)
                check_partitions(options, created.get("config", wanted))
                log.info("JetStream stream %r ready (subjects %s)", name, wanted["subjects"])
                return
        except JetStreamApiError as exc:
            if exc.err_code == ERR_SUBJECTS_OVERLAP:
                found = await self.request("STREAM.NAMES", {"subject": wanted["subjects"][0]})
                owner = (found.get("streams") or ["?"])[0]
                raise ConfigurationError(
                    f"subjects {wanted['subjects']} already belong to stream {owner!r}: pass "
                    f"NatsOptions(stream={owner!r}) to use it, or another subject_prefix"
                ) from None
            if exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise
        config = (await self._existing(options))["config"]
        subjects = config.get("subjects", [])
        missing = [s for s in wanted["subjects"] if s not in subjects]
        update = {**config, "subjects": [*subjects, *missing]}
        if options.delayed_publish:
            update["allow_msg_schedules"] = True
        # The one setting of stream_config applied to an existing stream: the consumer
        # limit, which the error at the limit tells users to raise (servers 2.15+ edit it).
        if (max_consumers := options.stream_config.get("max_consumers")) is not None:
            update["max_consumers"] = max_consumers
        if options.provision and update != config:
            await self.request(f"STREAM.UPDATE.{name}", update)
            log.info("JetStream stream %r updated (subjects %s)", name, update["subjects"])
        if (window := config.get("duplicate_window", 0) / _NS) < options.duplicate_window:
            log.warning(
                "JetStream stream %r keeps message ids for %.0fs, less than "
                "NatsOptions.duplicate_window (%.0fs): re-sent events older than that are "
                "stored twice (the inbox still recognises them)",
                name,
                window,
                options.duplicate_window,
            )

    async def _existing(self, options: NatsOptions) -> dict[str, Any]:
        """The stream's info, its partition count checked; ChannelNotFoundError when it is
        missing and provisioning is off (JetStreamApiError 10059 when it is on)."""
        self._check_version(options)
        try:
            info: dict[str, Any] = await self.request(f"STREAM.INFO.{options.stream}")
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND and not options.provision:
                raise ChannelNotFoundError(
                    f"{options.subject_prefix}.>",
                    f"create stream {options.stream!r} with subjects "
                    f"{stream_config(options)['subjects']}, or let the driver create it with "
                    "NatsOptions(provision=True)",
                ) from None
            raise
        check_partitions(options, info["config"])
        return info

    def _check_version(self, options: NatsOptions) -> None:
        """Delayed records need scheduled messages (nats-server 2.12+)."""
        try:
            found = self._nc.connected_server_version
            version = (found.major, found.minor, found.patch)
        except Exception:  # the client raises when the INFO carried no parsable version
            version = (0, 0, 0)
        if options.delayed_publish and version < (2, 12, 0):
            raise ConfigurationError(
                f"nats-server {'.'.join(map(str, version))} cannot hold delayed records "
                "(scheduled messages need 2.12+): upgrade it, or pass "
                "NatsOptions(delayed_publish=False)"
            )

    async def check_stream(self, options: NatsOptions) -> str:
        """What :meth:`ensure_stream` would refuse (JetStream off, a server too old, the
        stream missing while provisioning is off, another partition count), read-only."""
        account = await self.request("INFO")
        try:
            await self._existing(options)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            return (
                f"JetStream on ({account.get('streams', 0)} streams); stream "
                f"{options.stream!r} missing, created on first use"
            )
        layout = f"{options.partitions} partitions" if options.partitions else "unpartitioned"
        return f"JetStream on; stream {options.stream!r} exists ({layout})"

    # -- membership ---------------------------------------------------------------------------

    async def ensure_members_bucket(self, options: NatsOptions) -> None:
        """Create (or reuse) the membership bucket of a partitioned stream."""
        bucket = members_bucket(options.stream)
        name = f"KV_{bucket}"
        config: dict[str, Any] = {
            "name": name,
            "subjects": [f"$KV.{bucket}.>"],
            "retention": "limits",
            # On file: leases lost in a restart let a member take a partition whose owner
            # still holds records (docs: "Clusters"); an older bucket in memory is kept.
            "storage": "file",
            "num_replicas": options.replicas,
            "max_msgs_per_subject": 1,
            "discard": "new",
            "allow_direct": True,
            "allow_rollup_hdrs": True,
            "allow_msg_ttl": True,
        }
        try:
            await self.request(f"STREAM.CREATE.{name}", config)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NAME_IN_USE:
                raise

    async def subjects(self, stream: str, subject_filter: str) -> list[str]:
        """The subjects of ``stream`` matching ``subject_filter`` that hold messages."""
        info = await self.request(f"STREAM.INFO.{stream}", {"subjects_filter": subject_filter})
        found = (info.get("state") or {}).get("subjects") or {}
        return sorted(found)

    async def members(self, stream: str, action: str) -> list[str]:
        """The live members of ``action`` (its consumer name) on the partitioned ``stream``:
        their leases in the members bucket (none while there is no bucket)."""
        bucket = members_bucket(stream)
        try:
            leases = await self.subjects(f"KV_{bucket}", f"$KV.{bucket}.{action}.*")
        except JetStreamApiError as exc:
            if exc.err_code != ERR_STREAM_NOT_FOUND:
                raise
            return []
        return [lease.rpartition(".")[2] for lease in leases]

    # -- consumers ----------------------------------------------------------------------------

    async def consumer_info(self, stream: str, name: str) -> dict[str, Any]:
        info: dict[str, Any] = await self.request(f"CONSUMER.INFO.{stream}.{name}")
        return info

    async def consumer_infos(self, stream: str, consumers: Sequence[str]) -> list[dict[str, Any]]:
        """The info of each of ``consumers`` that exists."""
        found = []
        for name in consumers:
            try:
                found.append(await self.consumer_info(stream, name))
            except JetStreamApiError as exc:
                if exc.err_code != ERR_CONSUMER_NOT_FOUND:
                    raise
        return found

    async def pending(self, stream: str, consumers: Sequence[str]) -> int:
        """``num_pending`` plus ``num_ack_pending`` of the consumers, summed (a consumer that
        does not exist yet counts 0)."""
        return summed(await self.consumer_infos(stream, consumers), *UNACKED)

    async def delete_consumers(self, stream: str, names: Sequence[str]) -> None:
        """Delete the durable consumers of a throwaway group (logged, never raised)."""
        for name in names:
            try:
                await self.request(f"CONSUMER.DELETE.{stream}.{name}")
            except DriverError as exc:
                log.warning("could not delete throwaway consumer %r: %s", name, exc)

    async def ensure_consumer(
        self, stream: str, name: str, config: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the durable consumer, or update its editable fields when they differ;
        returns its info."""
        subject = f"CONSUMER.CREATE.{stream}.{name}"
        try:
            info = await self.consumer_info(stream, name)
        except JetStreamApiError as exc:
            if exc.err_code != ERR_CONSUMER_NOT_FOUND:
                raise
            try:
                body = {"stream_name": stream, "config": config, "action": "create"}
                created: dict[str, Any] = await self.request(subject, body)
                log.info("JetStream consumer %s/%s created", stream, name)
                return created
            except JetStreamApiError as race:
                if race.err_code == ERR_MAX_CONSUMERS:
                    raise await self._consumer_limit(stream, name) from None
                if race.err_code not in (ERR_CONSUMER_EXISTS, ERR_CONSUMER_NAME_EXISTS):
                    raise
            info = await self.consumer_info(stream, name)
        existing = info["config"]
        edits = {k: v for k, v in config.items() if k not in _KEPT}
        if _filters(existing) == _filters(config) and all(
            existing.get(k) == v for k, v in edits.items()
        ):
            return info
        update = {k: v for k, v in existing.items() if k not in _FILTERS}
        update.update({k: v for k, v in config.items() if k in _FILTERS}, **edits)
        body = {"stream_name": stream, "config": update, "action": "update"}
        updated: dict[str, Any] = await self.request(subject, body)
        log.info("JetStream consumer %s/%s updated: %s %s", stream, name, _filters(config), edits)
        return updated

    async def _consumer_limit(self, stream: str, consumer: str) -> DriverError:
        """Why ``consumer`` cannot be created on ``stream`` at its consumer limit, and the
        setting that raises the limit (not retriable)."""
        try:
            info = await self.request(f"STREAM.INFO.{stream}")
            limit = int(info["config"].get("max_consumers", -1))
            count = int(info["state"].get("consumer_count", 0))
            held = f"{count} consumers, its limit max_consumers=" + (
                f"{limit}" if limit > 0 else "-1 (the server's default: 1,000 on nats-server 2.15)"
            )
        except (DriverError, KeyError, TypeError, ValueError):
            held = "as many consumers as its max_consumers setting allows"
        return DriverError(
            f"stream {stream!r} holds {held}; with partitions every action has one consumer "
            "per partition, so actions x partitions (plus other consumers) must fit. Raise the "
            "stream's max_consumers with NatsOptions(stream_config={'max_consumers': N}) (the "
            "driver applies it to the existing stream when it connects), or delete unused "
            "consumers, let idle ones go (NatsOptions.consumer_inactive_threshold) or use "
            f"fewer partitions (creating consumer {consumer!r})",
            retriable=False,
        )


_FILTERS = ("filter_subject", "filter_subjects")
_KEPT = (*_FILTERS, "deliver_policy", "opt_start_seq", "opt_start_time", "replay_policy")
"""What an update keeps: the filters (compared as a set) and the fields set at creation."""


def _filters(config: Mapping[str, Any]) -> set[str]:
    one = config.get("filter_subject")
    return {*(config.get("filter_subjects") or []), *([one] if one else [])}


def summed(infos: Sequence[Mapping[str, Any]], *keys: str) -> int:
    """The counts ``keys`` of the consumer ``infos``, all summed."""
    return sum(int(info.get(key, 0)) for info in infos for key in keys)


def members_bucket(stream: str) -> str:
    """The membership bucket of ``stream`` (its JetStream stream is ``KV_<bucket>``)."""
    return f"{stream}_members"


def check_partitions(options: NatsOptions, config: Mapping[str, Any]) -> None:
    """Refuse a stream laid out for another partition count than ``options.partitions``."""
    raw = str((config.get("metadata") or {}).get(PARTITIONS_KEY, "0"))
    wanted = options.partitions
    if raw == str(wanted):
        return
    recorded = int(raw) if len(raw) <= 6 and raw.isascii() and raw.isdigit() else None
    layout = f"laid out for {recorded} partitions" if recorded else "unpartitioned"
    fix = f"pass NatsOptions(partitions={recorded}) (URL ?partitions={recorded}) to use it, or "
    if recorded is None:
        layout, fix = f"marked {PARTITIONS_KEY}={raw!r}", ""
    raise ConfigurationError(
        f"JetStream stream {options.stream!r} is {layout} (stream metadata "
        f"{PARTITIONS_KEY}), but this driver has NatsOptions(partitions={wanted}): {fix}"
        "give this layout its own stream and subject_prefix (NatsOptions(stream=..., "
        "subject_prefix=...)); a stream's partition count cannot change, since keys would "
        "move between partitions and lose their order"
    )


def stream_config(options: NatsOptions) -> dict[str, Any]:
    """The JSON config of the driver's stream."""
    subjects = [f"{options.subject_prefix}.>"]
    config: dict[str, Any] = {
        "name": options.stream,
        "subjects": subjects,
        "retention": "limits",
        "storage": options.storage,
        "num_replicas": options.replicas,
        "max_age": int(options.max_age * _NS),
        "max_bytes": options.max_bytes,
        "duplicate_window": int(options.duplicate_window * _NS),
        "discard": "old",
    }
    if options.delayed_publish:
        subjects.append(f"{options.delayed_prefix}.>")
        config["allow_msg_schedules"] = True
    config.update(options.stream_config)
    config["metadata"] = {**(config.get("metadata") or {}), PARTITIONS_KEY: str(options.partitions)}
    return config


def consumer_config(
    name: str,
    filters: Sequence[str],
    start: str,
    options: NatsSubscriptionOptions,
    inactive_threshold: float = 0.0,
) -> dict[str, Any]:
    """The JSON config of one group's durable pull consumer."""
    config: dict[str, Any] = {
        "durable_name": name,
        "name": name,
        "ack_policy": "explicit",
        "deliver_policy": "all" if start == "earliest" else "new",
        "replay_policy": "instant",
        "ack_wait": int(options.ack_wait * _NS),
        "max_deliver": options.max_deliver,
        "max_ack_pending": options.max_ack_pending,
    }
    if inactive_threshold:
        config["inactive_threshold"] = int(inactive_threshold * _NS)
    if options.failover:
        config["priority_groups"] = [PRIORITY_GROUP]
        config["priority_policy"] = "pinned_client"
        config["priority_timeout"] = int(options.takeover_after * _NS)
    if len(filters) == 1:
        config["filter_subject"] = filters[0]
    else:
        config["filter_subjects"] = list(filters)
    config.update(options.consumer_config)
    return config
