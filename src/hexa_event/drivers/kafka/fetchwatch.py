"""Partitions a Kafka member holds, with records waiting (or no fetch answer at all), from
which it fetches nothing for ``FETCH_STALL_AFTER`` seconds: the member's position does not
move although the cached end is above it. A member holding back on purpose starves nothing.
Design: docs/engines/kafka.md, section "Failures and recovery" (fetch stall).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

FETCH_STALL_AFTER = 10.0
"""Seconds a held partition with records waiting (or with no fetch answer) may go without
handing out a record before health reports it: max(3 x the members' 1 s lag measurement,
10 s). A fetch after a leader change or a reconnect resumes within a few seconds."""

Key = tuple[str, int]


@dataclass(frozen=True)
class Starved:
    """A partition from which nothing was fetched for ``FETCH_STALL_AFTER`` seconds."""

    key: Key
    waiting: int | None
    """Records between the position and the end (None: no fetch answer told the end)."""
    since: float
    """Since when (monotonic) the position has not moved."""


class FetchWatch:
    """Per held partition, since when nothing was fetched while records wait."""

    def __init__(self) -> None:
        self.bound = FETCH_STALL_AFTER
        self._seen: dict[Key, tuple[int, float]] = {}
        """Partition -> (position, since when it has not moved with records waiting)."""

    def hold(self) -> None:
        """The member holds back on purpose: no partition starves, the clocks start again."""
        self._seen.clear()

    def observe(self, now: float, views: Mapping[Key, tuple[int, int]]) -> list[Starved]:
        """Note ``views`` (partition -> (position, end); negative: unknown) taken at ``now``;
        the partitions starved, oldest first. Partitions no longer held are forgotten."""
        seen: dict[Key, tuple[int, float]] = {}
        starved: list[Starved] = []
        for key, (position, end) in views.items():
            if end >= 0 and (position < 0 or end <= position):
                continue  # nothing waits (or where it starts is unknown: cannot tell)
            earlier = self._seen.get(key)
            since = earlier[1] if earlier is not None and earlier[0] == position else now
            seen[key] = (position, since)
            if now - since >= self.bound:
                starved.append(Starved(key, end - position if end >= 0 else None, since))
        self._seen = seen
        starved.sort(key=lambda s: (s.since, s.key))
        return starved


def describe(starved: list[Starved], now: float, states: Mapping[Key, str]) -> str:
    """Health's words for ``starved`` (non-empty), with librdkafka's fetch state of each
    partition where its statistics told it (``states``)."""
    parts = []
    for s in starved:
        name = f"{s.key[0]}-{s.key[1]}"
        waiting = "no fetch answer" if s.waiting is None else f"{s.waiting} waiting"
        state = states.get(s.key)
        parts.append(f"{name} ({waiting}{f', fetch state {state}' if state else ''})")
    longest = now - starved[0].since
    return (
        f"fetches nothing: no record of its partitions {', '.join(parts)} for "
        f"{longest:.0f} s although it holds them and takes records"
    )
