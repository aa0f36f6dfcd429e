"""The delivery buffer behind every driver's ``fetch``: ``Subscription.fetch`` is
``return await self._buffer.fetch(max_count)``; the engine's receive path feeds
:attr:`DeliveryBuffer.items` a batch at a time (docs/driver-contract.md, "The consume side
every driver shares"). Cancelling a fetch loses nothing: items leave the buffer only in
``take``, which runs without awaiting.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from ...errors import DriverError

T = TypeVar("T")
D = TypeVar("D")

Take = Callable[[deque[T], int], list[D]]
"""``(items, max_count)`` -> the deliveries handed out now (at most ``max_count``)."""


def _take_oldest(items: deque[T], max_count: int) -> list[T]:
    count = min(max_count, len(items))
    popleft = items.popleft
    return [popleft() for _ in range(count)]


class DeliveryBuffer(Generic[T, D]):
    """What a member received and has not handed out yet, and the wait for it. ``T`` is
    what the receive path stores (a delivery, or what one is made of when handed out),
    ``D`` what ``fetch`` returns; ``len(buffer)`` is the count buffered."""

    __slots__ = ("_closed", "_error", "_idle", "_ready", "_refill", "_take", "_waited", "items")

    def __init__(
        self,
        take: Take[T, D] | None = None,
        *,
        refill: Callable[[], Awaitable[bool]] | None = None,
        idle: Callable[[], float | None] | None = None,
        waited: Callable[[bool], None] | None = None,
    ) -> None:
        self.items: deque[T] = deque()
        """What arrived, oldest first (a driver may append here, then :meth:`wake`)."""
        self._take: Take[T, D] = take if take is not None else _take_oldest  # type: ignore[assignment]
        self._refill = refill
        self._idle = idle
        self._waited = waited
        self._ready = asyncio.Event()
        self._error: DriverError | None = None
        self._closed = False

    def __len__(self) -> int:  # also its truth: anything buffered
        return len(self.items)

    @property
    def closed(self) -> bool:
        return self._closed

    def extend(self, items: Iterable[T]) -> None:
        """Items that arrived (one wake-up for the whole batch)."""
        self.items.extend(items)
        self._ready.set()

    def append(self, item: T) -> None:
        """One item that arrived (the engine hands them over one at a time)."""
        self.items.append(item)
        self._ready.set()

    def appendleft(self, item: T) -> None:
        """An item to hand out before the others (a delivery given back)."""
        self.items.appendleft(item)
        self._ready.set()

    def keep(self, wanted: Callable[[T], bool]) -> None:
        """Drop the buffered items ``wanted`` refuses (partitions revoked or given up)."""
        self.items = deque(item for item in self.items if wanted(item))

    def wake(self) -> None:
        """Something other than an arrival may let a fetch go on (room freed by a
        settlement, a redelivery due, an assignment)."""
        self._ready.set()

    def fail(self, error: DriverError) -> None:
        """The member cannot go on: a waiting and every later fetch raises ``error`` (the
        first one set is kept)."""
        if self._error is None:
            self._error = error
        self._ready.set()

    def close(self) -> None:
        """Fetches return ``[]`` from now on; what was buffered is dropped."""
        self._closed = True
        self.items.clear()
        self._ready.set()

    async def fetch(self, max_count: int) -> list[D]:
        """Return 1..max_count deliveries (``take``), else raise the :meth:`fail` error,
        else run ``refill`` (a driver reading on demand) and take again, else wait for a
        wake-up or ``idle()`` seconds and tell ``waited(timed_out)``; ``[]`` once closed."""
        ready = self._ready
        while not self._closed:
            ready.clear()
            if self._error is not None:
                raise self._error
            out = self._take(self.items, max_count)
            if out:
                return out
            if self._refill is not None and await self._refill():
                continue
            if self._closed or ready.is_set():
                continue
            timeout = self._idle() if self._idle is not None else None
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that races with the event, and fetch would never return.
            timed_out = False
            try:
                async with asyncio.timeout(timeout):  # None: no timeout
                    await ready.wait()
            except TimeoutError:
                timed_out = True
            if self._waited is not None and timeout is not None:
                self._waited(timed_out)
        return []
