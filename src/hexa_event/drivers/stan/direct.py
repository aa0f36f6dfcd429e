"""NATS subscriptions whose messages go straight to a plain function, called by nats-py's
read loop as it parses each one, without nats-py's queue and task per message (why:
docs/engines/stan.md#direct-delivery).

Two ways in, both reaching into nats-py's client (there since nats-py 2.0; checked before
use): the client's ``_process_msg``, which its parser awaits for every message, is wrapped
once per client by :class:`_Reader`, which hands a direct subscription's message without
headers to the function as bytes, before nats-py builds a ``Msg`` of it; anything else
(headers, another subscription) goes nats-py's way, where the subscription has no callback
and its pending queue is replaced by :class:`_Handover`, which calls the function at once.
Without ``_pending_queue`` and ``_pending_size``, a task feeds the function from
``Subscription.messages``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

logger = logging.getLogger(__name__)

Handler = Callable[[bytes, dict[str, str] | None], None]
"""Takes one message's payload and its headers (None: none); must not block. What it
raises is logged, never passed to nats-py."""

_PROCESS_MSG = NatsClient._process_msg
_PROCESS_MSG_ARGS = ["self", "sid", "subject", "reply", "data", "headers"]


def _call(handler: Handler, data: bytes, headers: dict[str, str] | None, subject: str) -> None:
    try:
        handler(data, headers)
    except Exception:  # an error here would break nats-py's read loop
        logger.exception("handling a message on %s failed", subject)


class _Handover:
    """Stands in for a subscription's pending queue: each message put goes to the handler
    at once (nothing is queued, so ``join`` and the counts have nothing to wait for)."""

    __slots__ = ("handler", "sub")

    def __init__(self, sub: NatsSubscription, handler: Handler) -> None:
        self.sub = sub
        self.handler = handler

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # added by nats-py just before; never queued
        _call(self.handler, msg.data, msg.headers, self.sub.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


class _Reader:
    """Stands in for one client's ``_process_msg``: a message without headers to a direct
    subscription goes to its handler as bytes, counted as nats-py counts it; everything
    else goes to nats-py's own ``_process_msg``."""

    __slots__ = ("direct", "nc", "process")

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.process: Callable[..., Awaitable[None]] = nc._process_msg
        self.direct: dict[int, tuple[NatsSubscription, Handler]] = {}

    async def __call__(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        entry = self.direct.get(sid)
        if entry is None or headers:
            await self.process(sid, subject, reply, data, headers)
            return
        sub, handler = entry
        nc = self.nc
        if nc._subs.get(sid) is not sub:  # unsubscribed: nats-py drops its messages too
            del self.direct[sid]
            return
        stats = nc.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        sub._received += 1
        try:
            handler(data, None)
        except Exception:  # an error here would break nats-py's read loop
            logger.exception("handling a message on %s failed", sub.subject)


def _reader(nc: NatsClient) -> _Reader | None:
    """The client's :class:`_Reader`, installed on first use; None where nats-py's client
    is not as :class:`_Reader` knows it."""
    process = getattr(nc, "_process_msg", None)
    if isinstance(process, _Reader):
        return process
    if (
        getattr(process, "__func__", None) is not _PROCESS_MSG
        or list(inspect.signature(_PROCESS_MSG).parameters) != _PROCESS_MSG_ARGS
        or not isinstance(getattr(nc, "_subs", None), dict)
        or not isinstance(getattr(nc, "stats", None), dict)
    ):
        return None
    reader = _Reader(nc)
    nc._process_msg = reader  # type: ignore[method-assign]
    return reader


async def subscribe(nc: NatsClient, subject: str, handler: Handler) -> NatsSubscription:
    """Subscribe to ``subject``; every message goes to ``handler``, in order."""
    sub = await nc.subscribe(subject)
    queue = getattr(sub, "_pending_queue", None)
    if isinstance(queue, asyncio.Queue) and can_hand_over(sub):
        handover = _Handover(sub, handler)
        sub._pending_queue = handover  # type: ignore[assignment]
        while not queue.empty():  # arrived before the handover took over
            handover.put_nowait(queue.get_nowait())
        reader = _reader(nc)
        if reader is not None and isinstance(getattr(sub, "_received", None), int):
            reader.direct[sub._id] = (sub, handler)
        return sub
    _feed(sub, handler)
    return sub


def can_hand_over(sub: NatsSubscription) -> bool:
    """Whether ``sub`` is nats-py's subscription as :class:`_Handover` knows it."""
    return isinstance(getattr(sub, "_pending_size", None), int) and hasattr(sub, "_cb")


def _feed(sub: NatsSubscription, handler: Handler) -> None:
    async def feed() -> None:
        async for msg in sub.messages:
            _call(handler, msg.data, msg.headers, sub.subject)  # the subscription goes on

    task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(feed())
    _FEEDS.add(task)
    task.add_done_callback(_FEEDS.discard)


_FEEDS: set[asyncio.Task[Any]] = set()
"""The feeding tasks of subscriptions without a handover (kept from the garbage collector)."""
