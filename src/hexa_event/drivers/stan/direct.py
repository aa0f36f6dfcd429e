"""NATS subscriptions whose messages go straight to a plain function, called by nats-py's
read loop as it parses each one, without nats-py's queue and task per message (why:
docs/engines/stan.md#direct-delivery). The subscription has no callback and its pending queue
is replaced by :class:`_Handover`: that reaches into nats-py's ``_pending_queue`` and
``_pending_size`` (there since nats-py 2.0); without them, a task feeds the function from
``Subscription.messages``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

logger = logging.getLogger(__name__)

Handler = Callable[[Msg], None]
"""Takes one message; must not block. What it raises is logged, never passed to nats-py."""


class _Handover:
    """Stands in for a subscription's pending queue: each message put goes to the handler
    at once (nothing is queued, so ``join`` and the counts have nothing to wait for)."""

    __slots__ = ("handler", "sub")

    def __init__(self, sub: NatsSubscription, handler: Handler) -> None:
        self.sub = sub
        self.handler = handler

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # added by nats-py just before; never queued
        try:
            self.handler(msg)
        except Exception:  # an error here would break nats-py's read loop
            logger.exception("handling a message on %s failed", self.sub.subject)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


async def subscribe(nc: NatsClient, subject: str, handler: Handler) -> NatsSubscription:
    """Subscribe to ``subject``; every message goes to ``handler``, in order."""
    sub = await nc.subscribe(subject)
    queue = getattr(sub, "_pending_queue", None)
    if isinstance(queue, asyncio.Queue) and can_hand_over(sub):
        handover = _Handover(sub, handler)
        sub._pending_queue = handover  # type: ignore[assignment]
        while not queue.empty():  # arrived before the handover took over
            handover.put_nowait(queue.get_nowait())
        return sub
    _feed(sub, handler)
    return sub


def can_hand_over(sub: NatsSubscription) -> bool:
    """Whether ``sub`` is nats-py's subscription as :class:`_Handover` knows it."""
    return isinstance(getattr(sub, "_pending_size", None), int) and hasattr(sub, "_cb")


def _feed(sub: NatsSubscription, handler: Handler) -> None:
    async def feed() -> None:
        async for msg in sub.messages:
            try:
                handler(msg)
            except Exception:  # the subscription goes on
                logger.exception("handling a message on %s failed", sub.subject)

    task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(feed())
    _FEEDS.add(task)
    task.add_done_callback(_FEEDS.discard)


_FEEDS: set[asyncio.Task[Any]] = set()
"""The feeding tasks of subscriptions without a handover (kept from the garbage collector)."""
