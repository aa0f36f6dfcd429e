"""Handler middlewares. A middleware wraps a handler into another handler.

``chain(handler, [m1, m2, m3])`` gives ``m1(m2(m3(handler)))``: the first listed is the
outermost. Handlers and middlewares are ``async (ctx, msg) -> None``; returning acks,
raising nacks.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .context import Context
from .errors import ConfigurationError
from .event import Message, loggable
from .threads import ABANDON, run_in_daemon_thread
from .wire import error_text

logger = logging.getLogger(__name__)

Handler = Callable[[Context, Message[Any]], Awaitable[None]]
SyncHandler = Callable[[Context, Message[Any]], None]
Middleware = Callable[[Handler], Handler]


HANDLER_SIGNATURE = "(ctx: he.Context, msg: he.Message[T]) -> None"
"""What every handler is called with, as error messages show it."""


def check_handler(
    handler: object, *, where: str = "subscribe()", signature: str = HANDLER_SIGNATURE
) -> None:
    """Raise :class:`ConfigurationError` unless ``handler`` can be called with two
    positional arguments (a context and a message): a function, sync or async, a bound
    method, a ``functools.partial`` or an object with ``__call__``.

    Checked when the handler is registered, so a wrong signature fails there instead of
    failing every event (retried, then dead-lettered) with a ``TypeError``.
    """
    expected = f"a handler is called as handler{signature} (async def or def)"
    if not callable(handler):
        raise ConfigurationError(
            f"{where}: the handler must be callable; got {handler!r} "
            f"({type(handler).__name__}). {expected}"
        )
    if any(
        inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        for fn in (handler, getattr(handler, "__call__", None))  # noqa: B004 - callable objects
    ):
        raise ConfigurationError(
            f"{where}: the handler is a generator (it yields), so calling it runs none of its "
            f"body and every event would be acked unhandled: make it return None. {expected}"
        )
    try:
        # Not through __wrapped__: a decorator's wrapper (the inbox's, say) is what is called.
        sig = inspect.signature(handler, follow_wrapped=False)
    except (TypeError, ValueError):
        return  # a builtin or extension without a signature: nothing to check
    try:
        sig.bind(object(), object())
    except TypeError as exc:
        name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
        raise ConfigurationError(
            f"{where}: handler {name}{sig} cannot be called with (ctx, msg): {exc}. {expected}"
        ) from None


Overruns = dict[object, tuple[str, float]]
"""Sync handlers cancelled (by :func:`timeout`, or any deadline of a middleware) whose
thread runs on: token to (what it handles, when it was cancelled, monotonic). A thread
cannot be stopped, so their keys wait until they return; the receiver's health names them."""


def as_async(handler: Handler | SyncHandler, overruns: Overruns | None = None) -> Handler:
    """An async handler; a plain function runs in a worker thread, off the event loop, and
    an awaitable it returns (a lambda calling an async function) is awaited on the loop.

    Cancelling a sync handler (``he.timeout``) cannot stop its thread: the wrapper waits for
    the thread to return (so the next event of the key never runs beside it), then raises
    (``he.timeout`` makes it a TimeoutError: retried). Meanwhile it is listed in
    ``overruns``, which the receiver's ``health()`` reports as a stalled lane."""
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    ):
        return handler  # type: ignore[return-value]

    @functools.wraps(handler)
    async def run_in_thread(ctx: Context, msg: Message[Any]) -> None:
        done: asyncio.Future[object] = run_in_daemon_thread(handler, ctx, msg)
        try:
            result = await asyncio.shield(done)
        except asyncio.CancelledError as exc:
            if exc.args and exc.args[0] == ABANDON:
                _abandoned(handler)
                raise
            # A thread cannot be stopped: wait for it (a second cancellation stops waiting)
            # so that the next event of this key never runs beside it.
            token = object()
            if overruns is not None:
                overruns[token] = (_handled(msg), time.monotonic())
            try:
                await asyncio.shield(done)
            finally:
                if overruns is not None:
                    overruns.pop(token, None)
            raise
        if inspect.isawaitable(result):  # a lambda around an async handler: run it too
            await result

    return run_in_thread


def _handled(msg: object) -> str:
    """What a sync handler runs for, as health names it (ids only: never a payload)."""
    if isinstance(msg, Message):
        return f"event {msg.id} of channel {msg.channel!r}"
    if isinstance(msg, list):  # a batch handler's list
        return f"a batch of {len(msg)} events"
    return "an event"


def _abandoned(handler: object) -> None:
    logger.warning(
        "sync handler %s still runs after the receiver's drain_timeout; its thread is left "
        "to finish on its own and its event is given back (delivered again, never acked)",
        getattr(handler, "__qualname__", type(handler).__qualname__),
    )


def chain(handler: Handler, middlewares: Sequence[Middleware]) -> Handler:
    """Wrap ``handler`` so the first middleware listed runs first."""
    for middleware in reversed(middlewares):
        handler = middleware(handler)
    return handler


def log_errors(handler: Handler) -> Handler:
    """Logs a failing handler's exception with the event's identity, then re-raises it.

    The receiver already logs every failure once (with what it did about it); add this
    middleware only to log at the handler's own place in a chain. The payload is never
    logged (it may hold personal data).
    """

    @functools.wraps(handler)
    async def logged(ctx: Context, msg: Message[Any]) -> None:
        try:
            await handler(ctx, msg)
        except Exception as exc:
            log_failure(logger, ctx, msg, exc)
            raise

    return logged


def timeout(seconds: float) -> Middleware:
    """Fails a handler that runs longer than ``seconds`` with TimeoutError (then retried);
    its message names the limit, so the dead letter (``HEXA_ERROR_MESSAGE``) says which."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def limited(ctx: Context, msg: Message[Any]) -> None:
            limit = asyncio.timeout(seconds)
            try:
                async with limit:
                    await handler(ctx, msg)
            except TimeoutError as exc:
                if not limit.expired():
                    raise  # the handler's own TimeoutError
                raise TimeoutError(
                    f"handler ran longer than he.timeout({seconds:g}) ({seconds:g} s) and "
                    "was cancelled"
                ) from exc

        return limited

    return wrap


def log_failure(log: logging.Logger, ctx: Context, msg: Message[Any], exc: BaseException) -> None:
    """A failing handler, logged to ``log`` with the event's identity (never its payload),
    the traceback at DEBUG only."""
    log.warning(
        "handler failed: action=%s event_id=%s channel=%s key=%s attempt=%d "
        "correlation_id=%s error=%s: %s",
        ctx.handler_action,
        msg.id,
        msg.channel,
        loggable(msg.key),
        msg.attempt,
        ctx.correlation_id,
        type(exc).__name__,
        error_text(exc),  # (an exception whose str() raises loses no log line)
        exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
    )
