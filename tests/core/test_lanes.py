"""Lanes: per-lane order, parallel lanes, and no worker wake-up per lane in a burst."""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import operator
import time
from collections.abc import Coroutine, Generator
from typing import Any

from hexa_event.lanes import Lanes


class _CountingCoroutine(collections.abc.Coroutine[Any, Any, Any]):
    """Wraps a coroutine and counts how often the event loop resumes it."""

    def __init__(self, coro: Coroutine[Any, Any, Any], counts: list[int]) -> None:
        self._coro = coro
        self._counts = counts

    def send(self, value: Any) -> Any:
        self._counts[0] += 1
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._counts[0] += 1
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise NotImplementedError  # only run as a task


async def test_a_burst_of_lanes_wakes_a_couple_of_workers_not_one_per_lane() -> None:
    loop = asyncio.get_running_loop()
    resumptions = [0]

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if getattr(coro, "__qualname__", "") == "Lanes._worker":
            coro = _CountingCoroutine(coro, resumptions)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)  # type: ignore[arg-type]
    try:
        done: list[tuple[int, int]] = []

        async def work(item: tuple[int, int]) -> float | None:
            done.append(item)  # never waits
            return None

        lanes: Lanes[tuple[int, int]] = Lanes(work, 32, name="burst")
        for _ in range(3):
            await asyncio.sleep(0)  # every worker starts and goes to sleep
        started = resumptions[0]
        for lane in range(64):
            for n in range(3):
                lanes.submit(lane, (lane, n))
        assert await lanes.join(5.0)
        for _ in range(3):
            await asyncio.sleep(0)
        woken = resumptions[0] - started
        await lanes.stop()
    finally:
        loop.set_task_factory(None)
    assert len(done) == 64 * 3
    for lane in range(64):
        assert [n for ln, n in done if ln == lane] == [0, 1, 2]
    # One worker drains the burst; the one it woke finds nothing left. Waking one worker per
    # new lane would resume the workers 32 times.
    assert woken <= 4, woken


async def test_lanes_run_in_parallel_when_handlers_wait() -> None:
    release = asyncio.Event()
    all_busy = asyncio.Event()
    running: set[int] = set()
    most = 0

    async def work(item: int) -> float | None:
        nonlocal most
        running.add(item)
        most = max(most, len(running))
        if len(running) == 8:
            all_busy.set()
        await release.wait()
        running.discard(item)
        return None

    lanes: Lanes[int] = Lanes(work, 8, name="parallel")
    for lane in range(20):
        lanes.submit(lane, lane)
    async with asyncio.timeout(5.0):
        await all_busy.wait()
    assert most == 8  # every worker took a lane, no more
    release.set()
    assert await lanes.join(5.0)
    assert lanes.count == 0
    await lanes.stop()


async def test_a_lane_keeps_its_order_while_its_items_wait() -> None:
    seen: list[tuple[str, int]] = []

    async def work(item: tuple[str, int]) -> float | None:
        await asyncio.sleep(0)
        seen.append(item)
        return None

    lanes: Lanes[tuple[str, int]] = Lanes(work, 4, name="order")
    for n in range(20):
        for key in "abcdef":
            lanes.submit(key, (key, n))
    assert await lanes.join(5.0)
    await lanes.stop()
    for key in "abcdef":
        assert [n for k, n in seen if k == key] == list(range(20))


async def test_submit_all_keeps_each_lane_in_order_beside_a_running_lane() -> None:
    """A fetched batch submitted in one call: new lanes start, a running lane queues behind
    its item, each lane in submit order, counted until done."""
    seen: list[tuple[str, int]] = []
    running = asyncio.Event()
    gate = asyncio.Event()
    others = asyncio.Event()

    async def work(item: tuple[str, int]) -> float | None:
        if item == ("a", 0):
            running.set()
            await gate.wait()
        await asyncio.sleep(0)
        seen.append(item)
        if len(seen) == 18:
            others.set()
        return None

    lanes: Lanes[tuple[str, int]] = Lanes(work, 4, name="all")
    lanes.submit("a", ("a", 0))
    async with asyncio.timeout(5.0):
        await running.wait()
    lanes.submit_all([(key, n) for n in range(1, 10) for key in "abc"], operator.itemgetter(0))
    assert lanes.count == 28
    async with asyncio.timeout(5.0):
        await others.wait()  # lanes b and c run while lane a waits
    assert not [item for item in seen if item[0] == "a"]
    gate.set()
    assert await lanes.join(5.0)
    assert lanes.count == 0
    await lanes.stop()
    for key, first in (("a", 0), ("b", 1), ("c", 1)):
        assert [n for k, n in seen if k == key] == list(range(first, 10))


async def test_a_lane_runner_runs_the_lane_itself_and_a_raise_finishes_its_head() -> None:
    """``run_lane``: one call for a lane's items (taken off as done, items submitted
    meanwhile included); a raise counts the head item done and the rest of the lane still
    runs; a returned due time parks the lane with its head item until then."""
    seen: list[tuple[str, int]] = []
    calls = 0
    parked_once = False

    async def run_lane(queue: collections.deque[tuple[str, int]]) -> float | None:
        nonlocal calls, parked_once
        calls += 1
        while queue:
            item = queue[0]
            await asyncio.sleep(0)
            if item == ("a", 1):
                raise RuntimeError("the runner failed")  # its head is taken off by Lanes
            if item == ("b", 2) and not parked_once:
                parked_once = True
                return time.time() + 0.05
            seen.append(item)
            queue.popleft()
        return None

    lanes: Lanes[tuple[str, int]] = Lanes(None, 2, name="runner", run_lane=run_lane)
    lanes.submit_all([(key, n) for n in range(4) for key in "ab"], operator.itemgetter(0))
    lanes.submit("a", ("a", 4))
    assert await lanes.join(5.0)
    assert lanes.count == 0
    await lanes.stop()
    assert [n for k, n in seen if k == "a"] == [0, 2, 3, 4]  # 1 raised (and counts as done)
    assert [n for k, n in seen if k == "b"] == [0, 1, 2, 3]  # 2 parked, then ran again
    assert calls == 4  # a, a again after the raise, b, b after parking: not one per item


async def test_submit_lanes_takes_each_items_lane_as_given() -> None:
    """``submit_lanes`` (the receiver's fetch loop reads the lanes itself): item i goes to
    lane i, each lane in submit order, a lane already queued keeps its order too."""
    seen: list[tuple[str, int]] = []

    async def work(item: tuple[str, int]) -> None:
        await asyncio.sleep(0)
        seen.append(item)

    lanes: Lanes[tuple[str, int]] = Lanes(work, 3)
    items = [(key, n) for n in range(5) for key in "xyz"]
    lanes.submit_lanes([f"lane-{key}" for key, _ in items[:6]], items[:6])
    lanes.submit_lanes([f"lane-{key}" for key, _ in items[6:]], items[6:])
    assert await lanes.join(5.0)
    await lanes.stop()
    assert sorted(seen) == sorted(items)
    for key in "xyz":
        assert [n for k, n in seen if k == key] == list(range(5))
