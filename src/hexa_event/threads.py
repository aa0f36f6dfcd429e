"""Sync handlers on daemon worker threads, so a hung one never keeps the process alive.

``asyncio.to_thread`` uses the loop's default executor, whose threads the interpreter joins
at exit: one sync handler stuck in a call keeps the process from exiting. These threads are
daemons, reused while busy work arrives, and leave after a minute idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

ABANDON = "hexa-event: the receiver is closing; a thread cannot be stopped, stop waiting"
"""The cancellation message with which a closing receiver cancels its workers: a sync
handler's wrapper then stops waiting for its thread (which runs on, abandoned) instead of
waiting for it as after any other cancellation."""

_IDLE_SECONDS = 60.0
_jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]]] = queue.SimpleQueue()
_lock = threading.Lock()
_idle = 0


def run_in_daemon_thread(fn: Callable[..., R], *args: Any) -> asyncio.Future[R]:
    """Run ``fn(*args)`` (with the caller's context variables) on a daemon thread."""
    global _idle
    loop = asyncio.get_running_loop()
    future: asyncio.Future[R] = loop.create_future()
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    with _lock:
        start = _idle == 0
        if not start:
            _idle -= 1
        _jobs.put((call, future))
    if start:
        threading.Thread(target=_serve, name="hexa-event-handler", daemon=True).start()
    return future


def _serve() -> None:
    global _idle
    while True:
        try:
            call, future = _jobs.get(timeout=_IDLE_SECONDS)
        except queue.Empty:
            with _lock:
                if _jobs.empty():
                    _idle -= 1
                    return
            continue
        try:
            result = call()
        except BaseException as exc:
            _resolve(future, None, _future_safe(exc))
        else:
            _resolve(future, result, None)
        with _lock:
            _idle += 1


def _future_safe(error: BaseException) -> BaseException:
    """``error``, or for a StopIteration (which a Future refuses with a TypeError, leaving
    its caller waiting forever) a RuntimeError caused by it, as Python does for a coroutine;
    so for a GeneratorExit (a task awaiting it has it thrown in, which closes every
    coroutine it awaits through and raises it in the task's own: the worker would end)."""
    if not isinstance(error, StopIteration | GeneratorExit):
        return error
    wrapped = RuntimeError(f"the sync handler raised {type(error).__name__}")
    wrapped.__cause__ = error
    return wrapped


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle)
