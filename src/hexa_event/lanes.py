"""Per-key lanes: deliveries of one lane run one after another, lanes run concurrently."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lanes(Generic[T]):
    """Runs ``work(item)`` for submitted items: in submit order within a lane, lanes in parallel.

    The number of concurrently running lanes is bounded by what the caller submits (the
    receiver bounds unsettled deliveries). ``work`` must not raise.
    """

    def __init__(self, work: Callable[[T], Awaitable[None]]) -> None:
        self._work = work
        self._queues: dict[Hashable, deque[T]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.abandoned: list[T] = []
        """Items never started because their lane was cancelled: settle them yourself."""

    def submit(self, lane: Hashable, item: T) -> None:
        queue = self._queues.get(lane)
        if queue is not None:
            queue.append(item)
            return
        self._queues[lane] = deque((item,))
        task = asyncio.create_task(self._drain(lane))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, lane: Hashable) -> None:
        queue = self._queues[lane]
        try:
            while queue:
                await self._work(queue[0])
                queue.popleft()
        except asyncio.CancelledError:
            queue.popleft()  # the running item: ``work`` settles it when cancelled
            self.abandoned.extend(queue)
            raise
        finally:
            del self._queues[lane]

    def pending(self) -> list[T]:
        """Items submitted and not yet finished (including the running ones)."""
        return [item for queue in self._queues.values() for item in queue]

    async def join(self, within: float | None) -> bool:
        """Wait for every lane to finish; False if ``within`` seconds passed first."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        return not pending

    async def cancel(self) -> None:
        """Cancel running lanes and wait for them to unwind."""
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
