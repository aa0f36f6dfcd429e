"""The findings ``hexa-event doctor`` reports the same way on every engine: a channel's
topic (or stream) and a group's state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...driver import ALL_CHANNELS, Finding

NEW_GROUP = "new (starts at the earliest record)"
CONSUME = "start a receiver for this action (hexa-event run, or receiver.start())"


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


def group_state(
    name: str,
    on: Sequence[str],
    members: int | None,
    lag: Mapping[str, int | None],
    engine: str = "",
) -> Finding:
    """The finding ``name`` on a group that exists: the channels it is ``on``, its live
    ``members`` (None: the engine cannot tell), what the ``engine`` says of it besides, and
    its ``lag`` per channel (:data:`~hexa_event.driver.ALL_CHANNELS` alone: one figure for
    all; None: unknown). A ``warn``, "nothing consumes it", when records wait and no member
    is live: ``exists on orders; 0 live member(s); lag orders 3: nothing consumes it``."""
    parts = [f"exists on {', '.join(on)}" if on else "exists"]
    if members is not None:
        parts.append(f"{members} live member(s)")
    if engine:
        parts.append(engine)
    shown = {c: "unknown" if n is None else n for c, n in lag.items()}
    if list(shown) == [ALL_CHANNELS]:
        parts.append(f"lag {shown[ALL_CHANNELS]}")
    elif shown:
        parts.append("lag " + ", ".join(f"{c} {n}" for c, n in shown.items()))
    detail = "; ".join(parts)
    if members != 0 or not any(lag.values()):
        return Finding(name, "ok", detail)
    return Finding(name, "warn", f"{detail}: nothing consumes it", CONSUME)
