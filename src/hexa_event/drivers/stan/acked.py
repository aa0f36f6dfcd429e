"""What one STAN subscription member acknowledged lately, so a late copy of it (crossing our
Ack on the wire, or queued at a busy client or server) is acked again, not run again. Why
and for how long: docs/engines/stan.md#acks-and-copies.
"""

from __future__ import annotations

MOST = 20_000
"""Sequences remembered per member at most (a few seconds of acks at high rates)."""


class RecentAcks:
    """Sequences acked here within ``keep`` seconds (monotonic), at most ``most``: one dict of
    numbers (nothing for the garbage collector to scan), sequence -> the time until which a
    copy is acked again, not run. In the order remembered (an ack again moves its sequence to
    the end), so times never decrease along it and :meth:`prune` stops at the first to keep.
    """

    __slots__ = ("_until", "keep", "most")

    def __init__(self, keep: float, most: int = MOST) -> None:
        self.keep = keep
        self.most = most
        self._until: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def clear(self) -> None:
        self._until.clear()

    def add(self, sequence: int, now: float) -> None:
        self._until.pop(sequence, None)
        self._until[sequence] = now + self.keep

    def add_all(self, sequences: list[int], now: float) -> None:
        """:meth:`add` of each of ``sequences``, in their order (one settle's acks)."""
        until = self._until
        if until.keys().isdisjoint(sequences):  # the rule: none acked here before
            until.update(dict.fromkeys(sequences, now + self.keep))
            return
        for sequence in sequences:
            self.add(sequence, now)

    def covers(self, sequence: int, now: float) -> bool:
        """True when ``sequence`` was acked here less than ``keep`` seconds ago."""
        until = self._until.get(sequence)
        return until is not None and now < until

    def prune(self, now: float) -> None:
        """Forget what is older than ``keep`` seconds, and the oldest beyond ``most``."""
        excess = len(self._until) - self.most
        old = []
        for sequence, until in self._until.items():
            if until > now and excess <= 0:
                break
            old.append(sequence)
            excess -= 1
        for sequence in old:
            del self._until[sequence]
