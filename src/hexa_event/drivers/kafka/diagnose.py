"""What ``hexa-event doctor`` reports of a Kafka cluster beyond the driver's check, through
its admin client (read-only): the metadata, each channel's topic and each consumer group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from ...driver import Finding
from .options import KafkaOptions


async def diagnose(
    options: KafkaOptions,
    channels: Sequence[str],
    groups: Sequence[str],
    within: float,
    scrub: Callable[[str], str],
) -> list[Finding]:
    """Findings on the metadata, the topics of ``channels`` and the ``groups``."""
    config = dict(options.admin())
    config.setdefault("socket.timeout.ms", int(within * 1000))
    admin = AdminClient(config)
    try:
        meta = await asyncio.to_thread(admin.list_topics, timeout=within)
    except Exception as exc:
        text = scrub(str(exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc))
        auth = any(w in text.lower() for w in ("auth", "sasl", "ssl", "credential"))
        return [
            Finding(
                "kafka metadata",
                "fail",
                f"the broker did not answer a metadata request: {text}",
                "check sasl.username/sasl.password and security.protocol in the URL or options"
                if auth
                else "check the broker is up and its advertised listeners are reachable from here",
                "auth" if auth else "unreachable",
            )
        ]
    found = [
        Finding(
            "kafka metadata",
            "ok",
            f"{len(meta.brokers)} broker(s), {len(meta.topics)} topics visible",
        )
    ]
    found += [_topic(channel, meta.topics.get(channel), options.provision) for channel in channels]
    if groups:
        found += await _groups(admin, groups, within)
    return found


def _topic(channel: str, topic: Any, provision: bool) -> Finding:
    if topic is not None and topic.error is not None:
        return Finding(
            f"topic {channel}",
            "fail",
            f"not allowed to read it: {topic.error.str()}",
            f"grant this principal DESCRIBE/READ/WRITE on topic {channel}",
            "auth",
        )
    if topic is None and provision:
        return Finding(
            f"topic {channel}", "ok", "missing; will be created on first use (provision is on)"
        )
    if topic is None:
        return Finding(
            f"topic {channel}",
            "fail",
            "missing and provisioning is off: emits and subscriptions to it will fail",
            f"create topic {channel} (kafka-topics.sh --create --topic {channel}), or "
            "connect with provision=True",
            "config",
        )
    return Finding(f"topic {channel}", "ok", f"{len(topic.partitions)} partitions")


async def _groups(admin: AdminClient, groups: Sequence[str], within: float) -> list[Finding]:
    try:
        listed = await asyncio.to_thread(
            lambda: admin.list_consumer_groups(request_timeout=within).result()
        )
        existing = {g.group_id for g in listed.valid}
    except Exception as exc:
        return [
            Finding(
                "consumer groups",
                "warn",
                f"cannot list consumer groups: {exc}",
                "grant DESCRIBE on the groups to see their state",
            )
        ]
    return [
        Finding(
            f"group {group}",
            "ok",
            "exists" if group in existing else "new (starts at the earliest record)",
        )
        for group in groups
    ]
