"""Scheduled events and replies at the core: validation, the wire, and the reply inbox."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.driver import Delivery, RawRecord
from hexa_event.errors import InvalidEventError, NotARequestError, RequestTimeoutError
from hexa_event.event import MAX_SCHEDULE, Message
from hexa_event.retry import RetryPolicy
from hexa_event.testing.waiting import eventually
from hexa_event.wire import Chain, open_delivery, retry_copy

CHAIN = Chain(action="a", base="a", policy=RetryPolicy())


def opened_due(record: RawRecord) -> float:
    return open_delivery(Delivery(record, coordinates="c-0"), CHAIN).due


@pytest.mark.parametrize(
    ("kwargs", "field", "fix"),
    [
        ({"deliver_at": datetime(2030, 1, 1)}, "deliver_at", "time zone"),
        ({"delay": math.nan}, "delay", "finite"),
        ({"delay": -1}, "delay", "from 0"),
        ({"delay": math.inf}, "delay", "finite"),
        ({"delay": 10**9}, "delay", "366 days"),
        ({"delay": 10**400}, "delay", "got an integer of 401 digits"),
        ({"delay": -(10**5000)}, "delay", "got an integer of about 5001 digits"),
        ({"delay": True}, "delay", "finite"),
        ({"deliver_at": datetime.now(UTC) + timedelta(days=400)}, "deliver_at", "366 days"),
        ({"deliver_at": "2030-01-01"}, "deliver_at", "datetime"),
        ({"delay": 1, "deliver_at": datetime.now(UTC)}, "deliver_at", "one of them"),
    ],
)
def test_bad_schedules_are_refused_naming_the_fix(kwargs: dict, field: str, fix: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        he.Event("c", "k", {}, **kwargs)
    assert caught.value.field == field
    assert fix in str(caught.value)


def test_a_scheduled_event_carries_its_due_time() -> None:
    at = datetime.now(timezone(timedelta(hours=5))) + timedelta(minutes=10)
    envelope = he.Envelope()
    record = envelope.seal(he.Event("c", "k", {}, deliver_at=at))
    # Rounded up to the millisecond: never before deliver_at (a CI run saw a memory handler
    # run 0.x ms before it when the header was truncated).
    at_ms = int(record.headers[env.DELIVER_AT])
    assert at_ms / 1000 >= at.timestamp()
    assert at_ms == math.ceil(at.timestamp() * 1000)
    assert record.not_before == 0.0  # only the emitter asks a broker that holds records
    before = time.time()
    delayed = envelope.seal(he.Event("c", "k", {}, delay=2.5))
    due = int(delayed.headers[env.DELIVER_AT]) / 1000
    assert before + 2.5 <= due <= time.time() + 2.5 + 0.001
    assert opened_due(delayed) == due
    assert env.DELIVER_AT not in envelope.seal(he.Event("c", "k", {}, delay=0)).headers


def test_past_and_absurd_due_times_on_the_wire() -> None:
    past = RawRecord("c", "k", {env.EVENT_ID: b"e", env.DELIVER_AT: b"1000"}, b"{}")
    assert opened_due(past) == 0.0
    far = RawRecord("c", "k", {env.EVENT_ID: b"e", env.DELIVER_AT: b"9" * 17}, b"{}")
    assert opened_due(far) <= time.time() + 367 * 86400
    bad = RawRecord("c", "k", {env.EVENT_ID: b"e", env.DELIVER_AT: b"soon"}, b"{}")
    with pytest.raises(he.DecodeError):
        opened_due(bad)


def test_a_far_due_time_is_capped_from_the_broker_time_not_from_now() -> None:
    """A due time in the year 9999 is capped from when the record was sent, so the cap
    stays put across redeliveries: capped from now, a nacked record came back for ever
    with its due time moved on each time (a retry copy on Pulsar, where the core nacks
    records not yet due)."""
    year_9999 = b"253402300799000"
    sent = time.time() - 1000
    scheduled = RawRecord("c", "k", {env.EVENT_ID: b"e", env.DELIVER_AT: year_9999}, b"{}")
    delivery = Delivery(scheduled, coordinates="c-0", timestamp=sent)
    assert open_delivery(delivery, CHAIN).due == sent + MAX_SCHEDULE
    headers = {env.ATTEMPT: b"2", env.ROOT_ACTION: b"a", env.RETRY_AT: year_9999}
    copy = Delivery(RawRecord("a.retry.1", "k", headers, b"{}"), coordinates="c-1", timestamp=sent)
    due = open_delivery(copy, CHAIN).due
    assert due == sent + CHAIN.policy.delay_cap
    assert due < time.time()  # due at once: sent longer ago than the longest back-off
    recent = time.time() - 1
    copy.timestamp = recent
    assert open_delivery(copy, CHAIN).due == recent + CHAIN.policy.delay_cap
    copy.timestamp = time.time() + 3600  # a broker clock ahead of ours: from now
    assert open_delivery(copy, CHAIN).due <= time.time() + CHAIN.policy.delay_cap


def test_reply_headers_and_retry_copies_drop_the_schedule() -> None:
    ctx = he.Context(correlation_id="c1", root_event_id="root", root_handler_action="act")
    record = he.Envelope().seal(he.Event("r", "k", {}, in_reply_to="req-1"), ctx)
    assert record.headers[env.REPLY_TO] == b"req-1"
    assert record.headers[env.ROOT_EVENT_ID] == b"root"
    assert record.headers[env.ROOT_ACTION] == b"act"
    with pytest.raises(InvalidEventError):  # reserved: set by deliver_at/delay alone
        he.Envelope().seal(he.Event("c", "k", {}, headers={env.DELIVER_AT: "1"}))
    scheduled = he.Envelope().seal(he.Event("c", "k", {}, delay=60))
    delivery = Delivery(scheduled, coordinates="c-1")
    copy = retry_copy(delivery, open_delivery(delivery, CHAIN), CHAIN, ValueError(), 0.0)
    assert env.DELIVER_AT not in copy.headers


async def test_reply_to_a_message_without_reply_channel_is_refused() -> None:
    conn = he.connect("memory://replies-unit")
    msg: Message[dict[str, int]] = Message("e1", "c", "k", {}, {}, 1, None)
    with pytest.raises(NotARequestError, match=r"emitter\.request"):
        await conn.emitter().reply(he.Context(), msg, {"x": 1})
    await conn.close()


async def test_timeout_error_names_channel_and_timeout_and_close_cleans_up() -> None:
    conn = he.connect("memory://replies-timeout")
    emitter = conn.emitter()
    with pytest.raises(RequestTimeoutError) as caught:
        await emitter.request(he.Event("nobody-listens", "k", {}), timeout=0.05)
    assert "nobody-listens" in str(caught.value)
    assert "0.05s" in str(caught.value)
    assert emitter.reply_channel.startswith("_reply.")
    with pytest.raises(he.ConfigurationError):
        await emitter.request(he.Event("c", "k", {}, reply_channel="mine"), timeout=1)
    with pytest.raises(he.ConfigurationError):
        await emitter.request(he.Event("c", "k", {}), timeout=math.nan)
    await conn.close()
    with pytest.raises(he.ClosedError):
        await emitter.request(he.Event("c", "k", {}), timeout=1)


async def test_go_style_reply_matched_by_correlation_id() -> None:
    """A reply without HEXA_REPLY_TO (what a Go handler emitting to ReplyChannel sends) is
    matched by correlation id; when two waiting requests share it, it is dropped."""
    conn = he.connect("memory://replies-go")
    emitter = conn.emitter()
    replier = conn.emitter()
    receiver = conn.receiver("svc")

    @receiver.subscribe("ask", action="answer")
    async def answer(ctx: he.Context, msg: Message[dict[str, int]]) -> None:
        # as Go does: a plain emit to the reply channel, same context (correlation id)
        await replier.emit(he.Event(msg.reply_channel, msg.key, {"n": msg.payload["n"]}), ctx)

    async with receiver:
        reply = await emitter.request(
            he.Event("ask", "k", {"n": 3}), he.Context(correlation_id="go-1"), timeout=5
        )
        assert reply.payload == {"n": 3}
        shared = he.Context(correlation_id="go-2")
        one = asyncio.create_task(
            emitter.request(he.Event("ask", "a", {"n": 1}), shared, timeout=0.5)
        )
        two = asyncio.create_task(
            emitter.request(he.Event("ask", "b", {"n": 2}), shared, timeout=0.5)
        )
        results = await asyncio.gather(one, two, return_exceptions=True)
        assert all(isinstance(r, RequestTimeoutError) for r in results)
        assert emitter.dropped_replies == 2
    await conn.close()


async def test_a_held_scheduled_event_is_not_a_stall_and_keeps_the_window_open() -> None:
    """Where the core holds a scheduled event (no delayed nack: Kafka, STAN), health stays
    healthy while it waits past stall_timeout, and other events keep flowing."""
    conn = he.connect("memory://replies-held")
    conn.driver.features = dataclasses.replace(conn.driver.features, delayed_nack=False)
    receiver = conn.receiver("svc", stall_timeout=0.2)
    seen: dict[str, float] = {}
    receiver.subscribe(
        "c", action="a", handler=lambda ctx, msg: seen.setdefault(msg.id, time.time())
    )
    emitter = conn.emitter()
    async with receiver:
        scheduled = await emitter.emit(he.Event("c", "k", {}, delay=1.0))
        due = time.time() + 1.0
        held = False
        while time.time() < due - 0.3:  # well past stall_timeout, before due
            health = receiver.health()
            assert health["healthy"], health["reason"]
            # Read here, before due (no await since the loop's check): read after the
            # loop, a sleep overshooting by 0.3 s on a loaded machine had seen it handled.
            held = held or health["actions"]["a"]["waiting"] == 1
            await asyncio.sleep(0.02)
        assert held
        other = await emitter.emit(he.Event("c", "other", {}))
        await eventually(lambda: other in seen, within=5, what="the other key")
        await eventually(lambda: scheduled in seen, within=5, what="the scheduled event")
        assert seen[scheduled] >= due - 0.05
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=5)
    await conn.close()


async def test_a_request_timing_out_while_the_reply_channel_opens_leaves_it_opening() -> None:
    """The first request gives up while the driver still subscribes: the subscribing goes
    on, and the next request uses that one subscription."""
    base = he.connect("memory://replies-slow-open")
    subscribes = 0

    class SlowSubscribe(he.Connection):
        async def subscribe(self, spec: he.SubscriptionSpec) -> he.Subscription:
            nonlocal subscribes
            subscribes += 1
            await asyncio.sleep(0.3)
            return await super().subscribe(spec)

    slow = SlowSubscribe(base.driver)
    emitter = he.Emitter(slow)
    replier = base.emitter()
    receiver = base.receiver("svc")

    @receiver.subscribe("ask", action="answer")
    async def answer(ctx: he.Context, msg: Message[Any]) -> None:
        await replier.reply(ctx, msg, {"ok": True})

    async with receiver:
        with pytest.raises(RequestTimeoutError):
            await emitter.request(he.Event("ask", "k", {}), timeout=0.05)
        reply = await emitter.request(he.Event("ask", "k", {}), timeout=5)
        assert reply.payload == {"ok": True}
        assert subscribes == 1
    await emitter.close()
    await base.close()
