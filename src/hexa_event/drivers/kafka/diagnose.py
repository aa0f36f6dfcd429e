"""What ``hexa-event doctor`` reports of a Kafka cluster beyond the driver's check, from
the check's metadata and admin client (read-only): each channel's topic and each group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from ...driver import Finding
from ..kit.findings import channel_finding, group_finding


async def diagnose(
    admin: AdminClient,
    metadata: Any,
    provision: bool,
    channels: Sequence[str],
    groups: Sequence[str],
    within: float,
) -> list[Finding]:
    """Findings on the topics of ``channels`` (in ``metadata``) and the ``groups``."""
    found = [_topic(channel, metadata.topics.get(channel), provision) for channel in channels]
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
    partitions = None if topic is None else len(topic.partitions)
    create = f"create topic {channel} (kafka-topics.sh --create --topic {channel})"
    return channel_finding(f"topic {channel}", partitions, provision, create)


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
    return [group_finding(f"group {g}", "" if g in existing else None) for g in groups]
