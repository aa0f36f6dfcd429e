"""``stuck.where``: the innermost calls a task waits in, for the "left behind" log lines."""

from __future__ import annotations

import asyncio

from hexa_event.stuck import where


async def inner(release: asyncio.Event) -> None:
    await release.wait()


async def outer(release: asyncio.Event) -> None:
    await inner(release)


async def test_names_the_innermost_calls_outermost_first() -> None:
    release = asyncio.Event()
    task = asyncio.create_task(outer(release))
    await asyncio.sleep(0)
    shown = where(task)
    names = [part.split(" (")[0] for part in shown.split(" > ")]
    assert names == ["outer", "inner", "wait"], shown
    assert "inner (core/test_stuck.py:" in shown
    release.set()
    await task


async def test_a_finished_task_or_a_plain_future_says_nothing() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert where(task) == ""
    assert where(asyncio.get_running_loop().create_future()) == ""
