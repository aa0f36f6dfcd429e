"""Taking turns at SQLite's one write lock with the application that shares the file.

SQLite has a single write lock, and a writer that finds it taken does not queue: its busy
handler sleeps and tries again (SQLite's sleeps grow to 100 ms). Loops that write back to
back (relays draining a backlog: claim, mark, claim...) release the lock for microseconds
between their transactions, and the application's business transaction, trying again every
100 ms, waited seconds and failed with "database is locked". So a loop's writes take turns:
one at a time, and a loop that has been writing back to back (for :data:`BURST` seconds
without a gap of :data:`PAUSE`) starts no write transaction in the first :data:`PAUSE`
seconds of every :data:`PERIOD` of the wall clock. The windows are the same for every loop
and process on the machine (relays, cleaners), longer than the busy handler's longest
sleep: a writer that is waiting tries within one and gets the lock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

BURST = 0.1
"""Seconds of holding SQLite's write lock (over back-to-back transactions) from which a
loop keeps the free windows."""
PAUSE = 0.15
"""Seconds of each window: longer than the busy handler's longest sleep (100 ms). A gap
this long between two of a loop's transactions ends its burst."""
PERIOD = 0.6
"""Seconds from one free window to the next (wall clock, the same in every process)."""


def window_left(now: float, *, pause: float = PAUSE, period: float = PERIOD) -> float:
    """Seconds left of the free window at wall-clock time ``now`` (0 outside one)."""
    into = now % period
    return pause - into if into < pause else 0.0


class WriteTurns:
    """Paces one loop's write transactions on SQLite (no-op elsewhere: PostgreSQL queues
    lock waiters). Wrap each write transaction in :meth:`turn`, never a sleep or a publish.

    Bound, for another writer using SQLite's busy handler (any busy timeout longer than
    this): it gets the lock within ``PERIOD`` (0.6 s) plus the longest single transaction
    of the loops (a claim or a mark of one batch, a cleaner's delete of one batch), however
    many paced loops write back to back. A loop that writes back to back idles at most
    ``PAUSE / PERIOD`` (25 %) of the time; one that writes now and then never waits.
    """

    def __init__(self, *, sqlite: bool, burst: float = BURST) -> None:
        self.sqlite = sqlite
        self.burst = burst
        self._one = asyncio.Lock()
        self._held = 0.0
        """Seconds the lock was held since the last gap of ``PAUSE``."""
        self._ended = float("-inf")
        """Monotonic time the last transaction ended."""
        self.pauses = 0
        """Free windows this loop waited out (it was writing back to back)."""

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A write transaction's turn: one at a time; while the loop writes back to back,
        outside the free windows."""
        if not self.sqlite:
            yield
            return
        async with self._one:
            if time.monotonic() - self._ended >= PAUSE:
                self._held = 0.0
            if self._held >= self.burst:
                left = window_left(time.time())
                if left > 0:
                    self.pauses += 1
                    await asyncio.sleep(left)
                    self._held = 0.0
            started = time.monotonic()
            try:
                yield
            finally:
                self._ended = time.monotonic()
                self._held += self._ended - started
