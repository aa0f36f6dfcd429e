"""The receive path's exception, cancellation and race paths found in review: each test
fails on the code before its fix."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.testing import Collector


def memory() -> he.Connection:
    return he.connect(f"memory://{uuid.uuid4().hex}")


async def test_a_sync_handler_raising_stop_iteration_fails_its_event_instead_of_hanging() -> None:
    # A Future refuses StopIteration (TypeError in the loop's callback): the handler's
    # future was never resolved, its key hung until close and the event was never settled.
    conn = memory()
    letters = Collector()
    receiver = conn.receiver("svc", drain_timeout=1)

    @receiver.subscribe("c", action="a", retry=he.RetryPolicy(max_retries=0))
    def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        next(iter(()))  # the classic unguarded next()

    receiver.subscribe("a.dlq", action="reader", handler=letters.add_message)
    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {"n": 1}))
        (letter,) = await letters.wait_for(1, within=10)
        assert receiver.health()["actions"]["a"]["dead_lettered"] == 1
    assert letter.headers[env.ERROR_TYPE] == b"RuntimeError"
    assert b"StopIteration" in letter.headers[env.ERROR_MESSAGE]
    await conn.close()


@dataclass
class Picky:
    n: int

    def __post_init__(self) -> None:
        next(iter(()))  # an unguarded next(): StopIteration out of the decoding


async def test_a_reply_whose_decoding_raises_stop_iteration_fails_that_request_only() -> None:
    # The reply reader handed the StopIteration to a Future, which refuses it with a
    # TypeError: the reader task ended and every later request of the emitter timed out.
    conn = memory()
    replier = conn.emitter()
    receiver = conn.receiver("svc")

    @receiver.subscribe("q", action="answer")
    async def answer(ctx: he.Context, msg: he.Message[Any]) -> None:
        await replier.reply(ctx, msg, {"n": 1})

    async with receiver:
        asker = conn.emitter()
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asker.request(he.Event("q", "k", {}), timeout=5, payload=Picky)
        reply = await asker.request(he.Event("q", "k", {}), timeout=5)
        assert reply.payload == {"n": 1}
    await conn.close()
