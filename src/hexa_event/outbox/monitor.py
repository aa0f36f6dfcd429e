"""What a relay's ``health()`` reports, and the backlog sampling behind it.

The relay tells its :class:`RelayMonitor` what happens (a claim began or ended, a batch
began or settled, each step's failures and successes, a backlog sample, the loop's end);
:meth:`RelayMonitor.problems` judges it without a database query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .._sql.health import Progress
from .._sql.problems import brief
from ..numbers import duration
from .stats import OutboxStats


class RelayMonitor:
    """The relay's progress as :meth:`problems` judges it: failure streaks of claiming,
    publishing and marking sent (``unhealthy_after`` seconds), the claim running, the
    batches in flight, the last backlog sample and why the loop ended."""

    def __init__(self, unhealthy_after: float, logger: logging.Logger) -> None:
        self.unhealthy_after = unhealthy_after
        self.progress = Progress("outbox relay", unhealthy_after, logger)
        self.claiming_since: float | None = None
        """Monotonic start of the claim running, None between claims."""
        self.batches: dict[int, float] = {}
        """Monotonic start of each batch in flight, by its first row id."""
        self.sample: tuple[OutboxStats, float] | None = None
        """The last backlog sample and its monotonic time."""
        self.sample_error = ""
        """Why the last sample failed ("" when it worked)."""
        self.loop_failure: BaseException | None = None
        """What ended the relay's loop, None while it runs or after a clean stop."""

    def sampled(self, stats: OutboxStats) -> None:
        self.sample, self.sample_error = (stats, time.monotonic()), ""

    def sample_failed(self, exc: BaseException) -> None:
        self.sample_error = f"{type(exc).__name__}: {brief(exc)}"

    def problems(
        self, now: float, *, lease: float, max_unsent_age: float | None
    ) -> tuple[list[str], bool]:
        """What keeps the relay from progressing, one line each, and whether a batch has
        stalled (not come back for ``2 * lease + unhealthy_after`` seconds)."""
        problems = self.progress.problems(now)
        failure = self.loop_failure
        if failure is not None:
            problems.append(f"the relay loop ended: {type(failure).__name__}: {brief(failure)}")
        claiming = now - (self.claiming_since or now)
        if claiming > self.unhealthy_after:  # a database not answering: not ``stalled``
            problems.append(f"a claim has not returned for {duration(claiming)}")
        # Marking sent is retried until twice the lease: a batch may take that long and
        # still settle (a database outage, which no restart mends).
        oldest_batch = now - min(self.batches.values(), default=now)
        stalled = oldest_batch > 2 * lease + self.unhealthy_after
        if stalled:
            busy = duration(oldest_batch)
            problems.append(f"a batch has been publishing or marking sent for {busy}")
        sample = self.sample
        age = sample[0].oldest_unsent_age if sample else None
        if max_unsent_age is not None and age is not None and age > max_unsent_age:
            # Whichever relay holds them: rows of a key whose publishes keep failing while
            # others go out, or a backlog growing faster than the relays send it.
            problems.append(
                f"the oldest unsent row is {duration(age)} old (max_unsent_age "
                f"{max_unsent_age:g}s): its publish keeps failing, or the relays fall behind"
            )
        return problems, stalled

    def fields(self, now: float) -> dict[str, Any]:
        """The health fields of the streaks and of the last sample."""
        sample = self.sample
        return {
            "claim_error": self.progress.error("claiming"),
            "publish_error": self.progress.error("publishing"),
            "mark_error": self.progress.error("marking sent"),
            "failing_for": self.progress.failing_for(now),
            "backlog": sample[0].backlog if sample else None,
            "backlog_at_least": sample[0].backlog_at_least if sample else False,
            "oldest_unsent_age": sample[0].oldest_unsent_age if sample else None,
            "backlog_age": round(now - sample[1], 3) if sample else None,
            "backlog_error": self.sample_error,
        }


async def sample_every(
    stats: Callable[[], Awaitable[OutboxStats]],
    interval: Callable[[], float],
    stop: asyncio.Event,
) -> None:
    """Call ``stats`` every ``interval()`` seconds until ``stop`` (it keeps its own error
    for the health report)."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await stats()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval())
