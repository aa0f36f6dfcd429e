"""Per-key lanes on a fixed pool of workers: one item of a lane at a time, in submit order.

No task per item: ``workers`` long-lived tasks take ready lanes from one queue. ``work(item)``
returns None when it is done with the item, or an epoch time at which to run the same item
again: the lane is parked until then without holding a worker (a retry copy waiting out its
back-off never stops other keys). A caller that runs items by the thousand gives
``run_lane(queue)`` instead, which runs a lane's items itself: no coroutine per item.

Wake-ups: at most one idle worker is being woken at any time. The worker that wakes takes a
lane and, if more lanes are ready, wakes the next one; a worker that finishes its lane takes
the next ready lane without sleeping. So a burst of N new lanes whose handlers never wait
costs one or two wake-ups, not N (each a turn of the event loop); handlers that do wait
still spread over the workers, one more joining per turn of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterator, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[T], Awaitable[float | None]]
LaneWork = Callable[[deque[T]], Awaitable[float | None]]
"""Run a lane's items from the head of its queue, taking each off (``popleft``) once done
(items may be appended meanwhile); return None once the queue is empty, or the epoch time
at which to run the head item, left in the queue, again."""


class Lanes(Generic[T]):
    """Runs ``work(item)`` for submitted items: in submit order within a lane, lanes in parallel.

    ``work`` (or ``run_lane``, given instead) should not raise; if it does, the exception is
    logged and the item at the head of the lane counts as done (the caller settles what it
    hands in).
    """

    def __init__(
        self,
        work: Work[T] | None,
        workers: int,
        *,
        name: str = "lanes",
        run_lane: LaneWork[T] | None = None,
    ) -> None:
        if run_lane is None:
            if work is None:
                raise TypeError("Lanes needs work or run_lane")
            run_lane = _each(work)
        self._run_lane = run_lane
        self._queues: dict[Hashable, deque[T]] = {}
        self._ready: deque[Hashable] = deque()
        self._sleepers: deque[asyncio.Future[None]] = deque()
        """Idle workers, each waiting on its own future."""
        self._waking = False
        self._stopped = False
        """Set by :meth:`stop`: a worker left behind ends once its lane returns."""
        """A sleeping worker was woken and has not run yet (see the module docstring)."""
        self._parked: dict[Hashable, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"{name}-worker-{n}") for n in range(workers)
        ]

    @property
    def count(self) -> int:
        """Items submitted and not finished."""
        return sum(map(len, self._queues.values()))

    def submit(self, lane: Hashable, item: T) -> None:
        queue = self._queues.get(lane)
        if queue is not None:
            queue.append(item)
            return
        self._queues[lane] = deque((item,))
        self._idle.clear()
        self._make_ready(lane)

    def submit_all(self, items: Sequence[T], lane_of: Callable[[T], Hashable]) -> None:
        """:meth:`submit` each item to its lane ``lane_of(item)``, in order: one call for a
        fetched batch, and at most one wake-up."""
        self.submit_lanes(list(map(lane_of, items)), items)

    def submit_lanes(self, lanes: Sequence[Hashable], items: Sequence[T]) -> None:
        """:meth:`submit_all` with each item's lane given: ``lanes[i]`` is ``items[i]``'s."""
        queues, ready = self._queues, self._ready
        fresh = False
        for lane, item in zip(lanes, items, strict=True):
            queue = queues.get(lane)
            if queue is not None:
                queue.append(item)
            else:
                queues[lane] = deque((item,))
                ready.append(lane)
                fresh = True
        if fresh:
            self._idle.clear()
            if not self._waking:
                self._wake_one()

    def _make_ready(self, lane: Hashable) -> None:
        self._ready.append(lane)
        if not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake one sleeping worker, if any (callers check that none is being woken)."""
        sleepers = self._sleepers
        while sleepers:
            waiter = sleepers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking = True
                return

    async def _sleep(self) -> None:
        """Wait until woken (by :meth:`_wake_one`)."""
        waiter = asyncio.get_running_loop().create_future()
        self._sleepers.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Woken, then cancelled before running: hand the wake-up on.
                self._waking = False
                if self._ready:
                    self._wake_one()
            raise
        self._waking = False

    async def _worker(self) -> None:
        queues = self._queues
        ready = self._ready
        run_lane = self._run_lane
        while not self._stopped:
            if not ready:
                await self._sleep()
                continue
            lane = ready.popleft()
            if ready and not self._waking:
                self._wake_one()  # more lanes ready: the next sleeper takes one
            queue = queues[lane]
            due: float | None = None
            while queue:  # the whole lane in one turn: no hand-off per item
                try:
                    due = await run_lane(queue)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("lane work failed; the item counts as done")
                    due = None
                    if queue:
                        queue.popleft()
                if due is not None:
                    break
            if due is not None:
                self._park(lane, due)
                continue
            del queues[lane]
            if not queues:
                self._idle.set()

    def _park(self, lane: Hashable, due: float) -> None:
        loop = asyncio.get_running_loop()
        self._parked[lane] = loop.call_later(max(0.0, due - time.time()), self._unpark, lane)

    def _unpark(self, lane: Hashable) -> None:
        if self._parked.pop(lane, None) is not None:
            self._make_ready(lane)

    def wake_parked(self) -> None:
        """Make every parked lane ready now (at shutdown: work sees it and gives items back)."""
        for lane, handle in list(self._parked.items()):
            handle.cancel()
            self._unpark(lane)

    def items(self) -> Iterator[T]:
        """Items submitted and not finished (running, queued and parked)."""
        for queue in list(self._queues.values()):
            yield from list(queue)

    async def join(self, within: float | None) -> bool:
        """Wait until every lane is empty; False if ``within`` seconds passed first."""
        return await wait_set(self._idle, within)

    async def stop(
        self, grace: float = 5.0, *, message: str | None = None
    ) -> list[asyncio.Task[None]]:
        """Cancel the workers (with ``message``); wait up to ``grace`` s for them to unwind.
        Returns those that did not (a handler ignoring cancellation is left behind).
        Unfinished items stay in :meth:`items`; a worker left behind runs no other lane."""
        self._stopped = True
        for handle in self._parked.values():
            handle.cancel()
        self._parked.clear()
        for task in self._tasks:
            task.cancel(message)
        if not self._tasks:
            return []
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        return list(pending)

    @property
    def workers_alive(self) -> bool:
        return all(not task.done() for task in self._tasks)

    def queued(self, lane: Hashable) -> Sequence[T]:
        """The items of ``lane`` submitted and not finished, its running one first."""
        return self._queues.get(lane, ())

    def heads(self) -> Iterator[tuple[Hashable, T]]:
        """Each lane with items, and its first item (running, or the next to run)."""
        for lane, queue in list(self._queues.items()):
            if queue:
                yield lane, queue[0]

    @property
    def parked(self) -> Collection[Hashable]:
        """The lanes parked until a due time: their items wait, they do not stall."""
        return self._parked.keys()


def _each(work: Work[T]) -> LaneWork[T]:
    """A lane runner calling ``work`` for each item."""

    async def run_lane(queue: deque[T]) -> float | None:
        while queue:
            try:
                due = await work(queue[0])
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("lane work failed; the item counts as done")
                due = None
            if due is not None:
                return due
            queue.popleft()
        return None

    return run_lane


async def wait_set(event: asyncio.Event, within: float | None) -> bool:
    """Wait until ``event`` is set; False if ``within`` seconds passed first."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(within):
            await event.wait()
    except TimeoutError:
        return False
    return True
