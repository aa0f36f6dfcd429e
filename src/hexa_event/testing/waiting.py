"""Waiting in tests without sleeping blindly: poll a condition with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    condition: Callable[[], bool], *, within: float = 30.0, what: str = "condition"
) -> None:
    """Return as soon as ``condition()`` holds; AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    delay = 0.005
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within:.1f}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


class Collector:
    """Records what handlers saw; ``wait_for(n)`` returns once ``n`` items arrived.

    ``items`` (the list so far), ``add(item)`` (safe from sync handlers, which run on
    worker threads), ``add_message`` (a handler recording each message), ``len()`` and
    ``await wait_for(n, within=30)`` (the items, or AssertionError after ``within`` s).
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, item: Any) -> None:
        self.items.append(item)
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            with contextlib.suppress(RuntimeError):  # the waiting loop is closed
                loop.call_soon_threadsafe(self._changed.set)
        else:
            self._changed.set()

    async def add_message(self, ctx: Any, msg: Any) -> None:
        """A handler that records each message (``handler=collector.add_message``).

        Async, so it runs on the event loop: a sync handler runs on a worker thread, from
        which waking :meth:`wait_for` would not be safe."""
        self.add(msg)

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(self, count: int, *, within: float = 30.0) -> list[Any]:
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + within
        while len(self.items) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {within:.1f}s: {len(self.items)} of {count} items arrived"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return self.items
