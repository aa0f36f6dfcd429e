"""How the outbox relay and the cleaners tell whether they make progress: failure streaks.

Each step of a loop (``claiming``, ``publishing``, ``marking sent``, ``cleaning``) keeps its
streak of failures since its last success. A step is *failing* (and its owner unhealthy)
once it failed at least twice in a row and the first of those failures is ``bound`` seconds
old: one blip, or one slow retry, is not enough. The first time a step is seen failing (at
a failure, or by a health check) it is logged at ERROR with since when, its recovery at INFO.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ..numbers import duration
from .problems import brief, escaped


@dataclass(slots=True)
class Streak:
    """The failures of one step since its last success."""

    failures: int = 0
    since: float = 0.0
    """Monotonic time of the first failure of the streak."""
    since_wall: datetime | None = None
    error: str = ""
    reported: bool = False


class Progress:
    """Failure streaks of a loop's steps, judged against ``bound`` seconds."""

    def __init__(self, owner: str, bound: float, logger: logging.Logger) -> None:
        self.owner = owner
        self.bound = bound
        self._log = logger
        self._streaks: dict[str, Streak] = {}

    def failed(self, step: str, error: BaseException | str) -> None:
        """One more failure of ``step``; logs once when the step turns failing. Its text
        (an error's, or one given) is escaped: no NUL, no lone surrogate in logs or
        health reports."""
        text = (
            escaped(error) if isinstance(error, str) else f"{type(error).__name__}: {brief(error)}"
        )
        streak = self._streaks.get(step)
        if streak is None:
            streak = self._streaks[step] = Streak(
                since=time.monotonic(), since_wall=datetime.now(UTC)
            )
        streak.failures += 1
        streak.error = text
        self._judge(step, streak, time.monotonic())

    def succeeded(self, step: str) -> None:
        """``step`` worked: its streak ends (logged when it had been reported)."""
        streak = self._streaks.pop(step, None)
        if streak is not None and streak.reported:
            self._log.info(
                "%s: %s works again after %.0fs",
                self.owner,
                step,
                time.monotonic() - streak.since,
            )

    def error(self, step: str) -> str:
        """The last error of ``step``'s current streak ("" when it works)."""
        streak = self._streaks.get(step)
        return streak.error if streak is not None else ""

    def failing_for(self, now: float) -> float:
        """Seconds since the oldest current streak began (0 when every step works)."""
        if not self._streaks:
            return 0.0
        return round(now - min(s.since for s in self._streaks.values()), 3)

    def problems(self, now: float) -> list[str]:
        """What fails past the bound, one line per step."""
        return [
            self._describe(step, streak, now)
            for step, streak in self._streaks.items()
            if self._judge(step, streak, now)
        ]

    def _judge(self, step: str, streak: Streak, now: float) -> bool:
        """Whether ``streak`` is past the bound; logged the first time it is seen so."""
        failing = streak.failures >= 2 and now - streak.since >= self.bound
        if failing and not streak.reported:
            streak.reported = True
            self._log.error("%s: %s", self.owner, self._describe(step, streak, now))
        return failing

    @staticmethod
    def _describe(step: str, streak: Streak, now: float) -> str:
        since = streak.since_wall.strftime("%Y-%m-%d %H:%M:%S UTC") if streak.since_wall else "?"
        return (
            f"{step} has failed {streak.failures} times in a row for "
            f"{duration(now - streak.since)} "
            f"(since {since}): {streak.error}"
        )
