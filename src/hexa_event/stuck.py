"""Where a task that ignores its cancellation is waiting, for the line that says it was
left behind: the person on call then reads which call hangs (a handler's, a middleware's
database call, a driver's) instead of guessing."""

from __future__ import annotations

import asyncio
import os
from typing import Any

_SHOWN = 3
"""Innermost frames named."""


def where(task: asyncio.Future[Any]) -> str:
    """The innermost coroutine frames ``task`` awaits in, outermost first, as
    ``function (folder/file.py:line)`` joined by `` > ``; "" when it is not a running
    coroutine task."""
    frames = []
    awaited: Any = getattr(task, "get_coro", lambda: None)()
    for _ in range(1000):  # (a chain of awaits is finite; a bound costs nothing)
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(
        f"{f.f_code.co_name} ({_short(f.f_code.co_filename)}:{f.f_lineno})"
        for f in frames[-_SHOWN:]
    )


def _short(path: str) -> str:
    """A source file's folder and name (``inbox/store.py``)."""
    folder, name = os.path.split(path)
    return f"{os.path.basename(folder)}/{name}" if folder else name
