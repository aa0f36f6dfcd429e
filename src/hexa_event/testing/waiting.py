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
    """Records what handlers saw; ``wait_for(n)`` returns once ``n`` items arrived."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    def add_message(self, ctx: Any, msg: Any) -> None:
        """A handler that records each message (``handler=collector.add_message``)."""
        self.add(msg)

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(self, count: int, *, within: float = 30.0) -> list[Any]:
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
