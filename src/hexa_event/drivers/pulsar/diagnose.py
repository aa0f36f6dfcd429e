"""What ``hexa-event doctor`` reports of Pulsar beyond the driver's check (which reads the
namespace and looks a topic up): each channel's topic and each group's subscription,
through the admin API (read-only; blocking calls, run it in a thread)."""

from __future__ import annotations

from collections.abc import Sequence

from ...driver import Finding
from ..kit.findings import channel_finding, group_finding
from .admin import PulsarAdmin
from .options import PulsarOptions


def diagnose(
    options: PulsarOptions, admin: PulsarAdmin, channels: Sequence[str], groups: Sequence[str]
) -> list[Finding]:
    where = f"{options.tenant}/{options.namespace}"
    found = [Finding("pulsar admin API", "ok", f"namespace {where} exists")]
    existing: dict[str, list[str]] = {}
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
            existing[channel] = admin.subscriptions(channel)
    for group in groups:
        on = [c for c, subs in existing.items() if group in subs]
        found.append(group_finding(f"subscription {group}", f" on {', '.join(on)}" if on else None))
    return found
