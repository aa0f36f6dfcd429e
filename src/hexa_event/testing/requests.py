"""The conformance checks of request/reply and scheduled events (part of
:class:`~hexa_event.testing.conformance.DriverConformance`).

Scheduled events are checked against :attr:`RequestConformance.schedule_bound`: each is
handled no earlier than its due time and at most that many seconds after it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from .. import envelope as env
from ..connect import Connection
from ..context import Context
from ..errors import RequestTimeoutError
from ..event import Event, Message
from ..propagation import CORRELATION_ID
from .contract import DriverPool
from .settling import SettlementConformance
from .waiting import Collector, eventually


@dataclass
class Ask:
    """The request payload of the suite."""

    id: str
    n: int


@dataclass
class Answer:
    """The reply payload of the suite."""

    id: str
    doubled: int


class RequestConformance(SettlementConformance):
    """Request/reply round trips and scheduled events through the public face."""

    schedule_bound: ClassVar[float] = 2.0
    """Seconds a scheduled event may be handled after its due time."""

    async def responder(
        self, pool: DriverPool, hold: dict[str, asyncio.Event] | None = None
    ) -> str:
        """A channel with a started handler answering each Ask with its Answer; an Ask whose
        id is in ``hold`` is answered only once that event is set."""
        conn = await pool.new()
        channel, action = self.names("rq")
        await conn.provision([channel])
        replier = conn.emitter()
        receiver = conn.receiver("responder", concurrency=256)

        @receiver.subscribe(channel, action=action, payload=Ask)
        async def answer(ctx: Context, msg: Message[Ask]) -> None:
            if hold is not None and msg.payload.id in hold:
                await hold[msg.payload.id].wait()
            await replier.reply(ctx, msg, Answer(msg.payload.id, 2 * msg.payload.n))

        await self.started(pool, receiver)
        return channel

    async def requester(self, pool: DriverPool) -> Connection:
        return await pool.new()

    async def channel_exists(self, conn: Connection, channel: str) -> bool | None:
        """Whether ``channel`` exists on the engine; None (the default) for an engine that
        keeps no channel worth deleting. Drivers that implement ``Driver.discard`` say."""
        del conn, channel
        return None

    # -- request / reply -----------------------------------------------------------------

    async def test_request_reply_round_trip(self, pool: DriverPool) -> None:
        """The reply comes back decoded, with the request's correlation and root ids."""
        channel = await self.responder(pool)
        emitter = (await self.requester(pool)).emitter()
        ctx = Context(correlation_id="corr-round-trip")
        request = Event(channel, "k1", Ask("a", 21), id="req-round-trip")
        reply = await emitter.request(request, ctx, timeout=self.timeout, payload=Answer)
        assert reply.payload == Answer("a", 42)
        assert reply.channel == emitter.reply_channel
        assert reply.headers[CORRELATION_ID] == b"corr-round-trip"
        assert reply.headers[env.REPLY_TO] == b"req-round-trip"
        assert reply.headers[env.ROOT_EVENT_ID] == b"req-round-trip"
        assert emitter.dropped_replies == 0

    async def test_closing_the_emitter_deletes_its_reply_channel(self, pool: DriverPool) -> None:
        """Each emitter that sent a request has a reply channel of its own: closing the
        emitter deletes it, or a service would leave one behind per process start."""
        channel = await self.responder(pool)
        conn = await self.requester(pool)
        emitter = conn.emitter()
        ask = Event(channel, "k1", Ask("gone", 1))
        await emitter.request(ask, Context(), timeout=self.timeout, payload=Answer)
        reply_channel = emitter.reply_channel
        exists = await self.channel_exists(conn, reply_channel)
        if exists is None:
            pytest.skip(f"{conn.features.name} keeps no channel worth deleting")
        assert exists, f"the reply channel {reply_channel} should exist while the emitter is open"
        await emitter.close()
        deadline = time.monotonic() + self.timeout
        while await self.channel_exists(conn, reply_channel):
            assert time.monotonic() < deadline, f"{reply_channel} still exists after close"
            await asyncio.sleep(0.2)

    async def test_request_timeout_fires_and_late_reply_is_dropped(self, pool: DriverPool) -> None:
        """No reply in time raises RequestTimeoutError; the late reply is dropped and counted,
        and the next request gets its own reply, not the late one."""
        release = asyncio.Event()
        channel = await self.responder(pool, hold={"slow": release})
        emitter = (await self.requester(pool)).emitter()
        warm = await emitter.request(
            Event(channel, "k", Ask("warm", 1)), timeout=self.timeout, payload=Answer
        )
        assert warm.payload == Answer("warm", 2)
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError) as caught:
            await emitter.request(Event(channel, "slow", Ask("slow", 5)), timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 0.5 + self.timeout
        assert channel in str(caught.value)
        assert "0.5s" in str(caught.value)
        release.set()
        await eventually(lambda: emitter.dropped_replies == 1, within=self.timeout, what="drop")
        after = await emitter.request(
            Event(channel, "slow", Ask("after", 7)), timeout=self.timeout, payload=Answer
        )
        assert after.payload == Answer("after", 14)
        assert emitter.dropped_replies == 1

    async def test_concurrent_requests_answered_out_of_order(self, pool: DriverPool) -> None:
        """The second request is answered first; each caller gets its own reply."""
        first_may_go = asyncio.Event()
        channel = await self.responder(pool, hold={"first": first_may_go})
        emitter = (await self.requester(pool)).emitter()
        first = asyncio.create_task(
            emitter.request(
                Event(channel, "k1", Ask("first", 1)), timeout=self.timeout, payload=Answer
            )
        )
        second = await emitter.request(
            Event(channel, "k2", Ask("second", 2)), timeout=self.timeout, payload=Answer
        )
        assert not first.done()
        first_may_go.set()
        assert second.payload == Answer("second", 4)
        assert (await first).payload == Answer("first", 2)

    async def test_thousand_concurrent_requests(self, pool: DriverPool) -> None:
        """1,000 requests in flight at once from one emitter all get their own reply."""
        channel = await self.responder(pool)
        emitter = (await self.requester(pool)).emitter()
        await emitter.request(Event(channel, "k", Ask("warm", 0)), timeout=self.timeout)
        count = 1000

        async def ask(i: int) -> None:
            reply = await emitter.request(
                Event(channel, f"k{i % 64}", Ask(f"r{i}", i)),
                timeout=3 * self.timeout,
                payload=Answer,
            )
            assert reply.payload == Answer(f"r{i}", 2 * i)

        await asyncio.gather(*(ask(i) for i in range(count)))
        assert emitter.dropped_replies == 0

    # -- scheduled events ----------------------------------------------------------------

    async def test_scheduled_events_wait_for_their_time(self, pool: DriverPool) -> None:
        """200 events due 0..5 s from now: each handled no earlier than due, within the bound,
        and events of other keys are not held back by them."""
        conn = await pool.new()
        channel, action = self.names("sched")
        await conn.provision([channel])
        count = 200
        got: list[tuple[float, Message[Any]]] = []
        receiver = conn.receiver("svc")

        @receiver.subscribe(channel, action=action)
        async def handle(ctx: Context, msg: Message[Any]) -> None:
            got.append((time.time(), msg))

        await self.started(pool, receiver)
        emitter = (await pool.new()).emitter()
        events = [
            Event(channel, f"k{i % 20}", {"i": i}, delay=5.0 * i / (count - 1))
            for i in range(count)
        ]
        sent = time.time()
        ids = await emitter.emit_many(events)
        unscheduled = await emitter.emit(Event(channel, "k-other", {"i": -1}))
        await eventually(
            lambda: {m.id for _, m in got} >= {*ids, unscheduled},
            within=self.timeout + 5,
            what="every scheduled event",
        )
        handled = [m.id for _, m in got]
        assert len(handled) == len(set(handled)), "a scheduled event was handled twice"
        late = 0.0
        for handled_at, msg in got:
            if msg.id == unscheduled:
                assert handled_at < sent + 5.0, "an unscheduled event waited for scheduled ones"
                continue
            raw = msg.headers.get(env.DELIVER_AT)  # none on the one with no delay
            due = int(raw) / 1000 if raw is not None else sent
            assert handled_at >= due, f"handled {due - handled_at:.3f}s early"
            assert handled_at >= sent + msg.payload["i"] * 5.0 / (count - 1) - 0.002
            late = max(late, handled_at - due)
        assert late <= self.schedule_bound, f"a scheduled event was {late:.2f}s late"

    async def test_scheduled_events_survive_a_consumer_restart(self, pool: DriverPool) -> None:
        """A receiver closed while scheduled events wait: the next one handles all of them,
        none before its time."""
        conn = await pool.new()
        channel, action = self.names("sched")
        await conn.provision([channel])
        got: dict[str, float] = {}
        seen = Collector()

        def handler(ctx: Context, msg: Message[Any]) -> None:
            got.setdefault(msg.id, time.time())
            seen.add(msg.id)

        emitter = conn.emitter()
        early = [Event(channel, f"e{i}", {"i": i}, delay=0.3) for i in range(10)]
        later = [Event(channel, f"l{i}", {"i": i}, delay=2.5) for i in range(10)]
        sent = time.time()
        ids = await emitter.emit_many([*early, *later])
        first = (await pool.new()).receiver("svc", drain_timeout=1)
        first.subscribe(channel, action=action, handler=handler)
        await self.started(pool, first)
        await seen.wait_for(10, within=self.timeout)
        await first.close()
        second = (await pool.new()).receiver("svc")
        second.subscribe(channel, action=action, handler=handler)
        await self.started(pool, second)
        await eventually(lambda: set(got) == set(ids), within=self.timeout, what="every event")
        # None before its time, whichever receiver ran it (on a busy machine the first one's
        # close may outlast the later events' 2.5 s, and then it may run them itself).
        for event_id, event in zip(ids, [*early, *later], strict=True):
            assert event.delay is not None
            early_by = sent + event.delay - got[event_id]
            assert early_by <= 0, f"{event.key} was handled {early_by:.3f}s before its time"

    async def test_more_scheduled_events_than_the_window_hold_back_no_other_key(
        self, pool: DriverPool
    ) -> None:
        """400 events due in 3 s, more than the receiver's window of 256 unsettled: an event
        of another key emitted after them is handled at once, then all 400 when due."""
        conn = await pool.new()
        channel, action = self.names("sched")
        await conn.provision([channel])
        handled: dict[str, float] = {}
        receiver = conn.receiver("svc", concurrency=16)  # a window of 256

        def handle(ctx: Context, msg: Message[Any]) -> None:
            handled.setdefault(msg.id, time.time())

        receiver.subscribe(channel, action=action, handler=handle)
        await self.started(pool, receiver)
        emitter = conn.emitter()
        ready = await emitter.emit(Event(channel, "ready", {"i": -2}))
        await eventually(lambda: ready in handled, within=self.timeout, what="the receiver")
        sent = time.time()
        held = await emitter.emit_many(
            Event(channel, f"k{i}", {"i": i}, delay=3.0) for i in range(400)
        )
        other = await emitter.emit(Event(channel, "other", {"i": -1}))
        await eventually(lambda: other in handled, within=self.timeout, what="the other key")
        assert handled[other] < sent + 3.0, "the other key waited for the scheduled events"
        await eventually(
            lambda: set(handled) >= set(held), within=self.timeout, what="the scheduled events"
        )
        assert min(handled[i] for i in held) >= sent + 3.0

    async def test_scheduled_event_and_key_order(self, pool: DriverPool) -> None:
        """E1 of key K due in 1 s, then E2 of K unscheduled. Where the broker holds scheduled
        records or the core gives them back until due (``scheduled_publish`` or
        ``delayed_nack``), E2 runs first; elsewhere (the core holds the record) E1 keeps its
        place and E2 waits behind it."""
        conn = await pool.new()
        channel, action = self.names("sched")
        await conn.provision([channel])
        order = Collector()
        receiver = conn.receiver("svc")
        receiver.subscribe(channel, action=action, handler=lambda ctx, msg: order.add(msg.id))
        await self.started(pool, receiver)
        emitter = conn.emitter()
        e1 = await emitter.emit(Event(channel, "K", {"n": 1}, delay=1.0))
        e2 = await emitter.emit(Event(channel, "K", {"n": 2}))
        await order.wait_for(2, within=self.timeout)
        features = conn.features
        if features.scheduled_publish or features.delayed_nack:
            assert order.items == [e2, e1]
        else:
            assert order.items == [e1, e2]
