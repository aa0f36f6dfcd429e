"""The findings ``hexa-event doctor`` reports the same way on every engine: a channel's
topic (or stream) and a group's state."""

from __future__ import annotations

from ...driver import Finding

NEW_GROUP = "new (starts at the earliest record)"


def channel_finding(name: str, partitions: int | None, provision: bool, create: str) -> Finding:
    """The finding ``name`` (``topic orders``) on a channel that has ``partitions`` (0: not
    partitioned; None: missing). Missing is fine while the driver provisions, and a failure
    otherwise, with ``create`` (how to make it) as the fix."""
    if partitions is None and provision:
        return Finding(name, "ok", "missing; will be created on first use (provision is on)")
    if partitions is None:
        why = "missing and provisioning is off: emits and subscriptions to it will fail"
        return Finding(name, "fail", why, f"{create}, or connect with provision=True", "config")
    return Finding(name, "ok", f"{partitions} partitions" if partitions else "non-partitioned")


def group_finding(name: str, where: str | None) -> Finding:
    """The finding ``name`` (``group billing``) on a group that exists (``where``: empty, or
    where it does) or is new (None)."""
    return Finding(name, "ok", NEW_GROUP if where is None else f"exists{where}")
