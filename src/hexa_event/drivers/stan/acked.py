"""What one STAN subscription member acknowledged lately, so a late copy of it (crossing our
Ack on the wire, or queued at a busy client or server) is acked again, not run again. Why
and for how long: docs/engines/stan.md#acks-and-copies.
"""

from __future__ import annotations

from collections import deque

MOST = 20_000
"""Sequences remembered per member at most (a few seconds of acks at high rates)."""


class RecentAcks:
    """Sequences acked here within ``keep`` seconds (monotonic), at most ``most``.

    The order they were remembered in is two deques of numbers, not one of tuples: thousands
    of entries live for seconds, and numbers are nothing for the garbage collector to scan.
    """

    __slots__ = ("_sequences", "_times", "_until", "keep", "most")

    def __init__(self, keep: float, most: int = MOST) -> None:
        self.keep = keep
        self.most = most
        self._until: dict[int, float] = {}
        """Sequence -> monotonic time until which a copy of it is acked again, not run."""
        self._times: deque[float] = deque()
        self._sequences: deque[int] = deque()
        """``until`` and sequence in the order remembered (so ``until`` never decreases)."""

    def __len__(self) -> int:
        return len(self._until)

    def clear(self) -> None:
        self._until.clear()
        self._times.clear()
        self._sequences.clear()

    def add(self, sequence: int, now: float) -> None:
        until = now + self.keep
        self._until[sequence] = until
        self._times.append(until)
        self._sequences.append(sequence)

    def covers(self, sequence: int, now: float) -> bool:
        """True when ``sequence`` was acked here less than ``keep`` seconds ago."""
        until = self._until.get(sequence)
        return until is not None and now < until

    def prune(self, now: float) -> None:
        """Forget what is older than ``keep`` seconds, and the oldest beyond ``most``."""
        times, sequences, until_of = self._times, self._sequences, self._until
        while times and (times[0] <= now or len(times) > self.most):
            until, sequence = times.popleft(), sequences.popleft()
            if until_of.get(sequence) == until:  # not remembered again since
                del until_of[sequence]
