"""What ``hexa-event doctor`` reports of Pulsar beyond the driver's check (which reads the
namespace and looks a topic up): each channel's topic and each group's subscription,
through the admin API (read-only; blocking calls, run it in a thread)."""

from __future__ import annotations

from collections.abc import Sequence

from ...driver import Finding
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
            partitions = admin.partitions_sync(channel)
        except Exception as exc:
            found.append(Finding(name, "warn", f"cannot read it: {exc}"))
            continue
        if partitions is None and options.provision:
            found.append(Finding(name, "ok", "missing; will be created on first use (provision)"))
        elif partitions is None:
            found.append(
                Finding(
                    name,
                    "fail",
                    "missing and provisioning is off: emits and subscriptions to it will fail",
                    f"create topic {options.topic(channel)} (pulsar-admin topics create), or "
                    "connect with provision=True",
                    "config",
                )
            )
        else:
            shape = f"{partitions} partitions" if partitions else "non-partitioned"
            found.append(Finding(name, "ok", shape))
            existing[channel] = admin.subscriptions_sync(channel)
    for group in groups:
        on = [c for c, subs in existing.items() if group in subs]
        state = f"exists on {', '.join(on)}" if on else "new (starts at the earliest record)"
        found.append(Finding(f"subscription {group}", "ok", state))
    return found
