"""Request/reply under attack: a broker that never answers, a reply subscription that ends,
hostile timeouts and replies (memory driver, with a wrapped driver where the broker must
misbehave)."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event import replies
from hexa_event.driver import Delivery, RawRecord, Subscription
from hexa_event.errors import ClosedError, DriverError, RequestTimeoutError
from hexa_event.event import Message
from hexa_event.propagation import CORRELATION_ID
from hexa_event.publishing import Publication, PublishCall
from hexa_event.testing.waiting import eventually
from otel_helpers import make_otel


class Wrapped(Subscription):
    """A subscription that passes everything on, and can be made to hang on close."""

    def __init__(self, inner: Subscription, close_hangs: asyncio.Event | None = None) -> None:
        self.inner = inner
        self.close_hangs = close_hangs
        self.fails: DriverError | None = None
        self.failing = asyncio.Event()
        self.fetches = 0

    def fail(self, error: DriverError | None) -> None:
        """Every fetch raises ``error`` from now on (a waiting one at once); None: no more."""
        self.fails = error
        if error is None:
            self.failing.clear()
        else:
            self.failing.set()

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        self.fetches += 1
        fetching = asyncio.ensure_future(self.inner.fetch(max_count))
        failing = asyncio.ensure_future(self.failing.wait())
        try:
            await asyncio.wait([fetching, failing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failing.cancel()
            if not fetching.done() or self.fails is not None:
                fetching.cancel()
        if self.fails is not None:
            raise self.fails
        return fetching.result()

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        await self.inner.settle(deliveries)

    async def close(self) -> None:
        await self.inner.close()
        if self.close_hangs is not None:
            await self.close_hangs.wait()


class Broker(he.Connection):
    """The memory driver, with a subscribe or a subscription's close that never answers
    (a broker that accepts the connection and then says nothing)."""

    def __init__(self, driver: he.Driver) -> None:
        super().__init__(driver)
        self.never = asyncio.Event()
        self.subscribe_hangs = False
        self.subscribe_fails: DriverError | None = None
        self.close_hangs = False
        self.subscribed: list[Wrapped] = []
        self.discarded: list[str] = []
        self.published = 0

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await super().publish(records)
        self.published += len(records)

    async def discard(self, channels: Sequence[str]) -> None:
        self.discarded.extend(channels)

    async def subscribe(self, spec: he.SubscriptionSpec) -> he.Subscription:
        if self.subscribe_hangs:
            await self.never.wait()
        if self.subscribe_fails is not None:
            raise self.subscribe_fails
        wrapped = Wrapped(await super().subscribe(spec), self.never if self.close_hangs else None)
        self.subscribed.append(wrapped)
        return wrapped


async def test_close_gives_up_on_a_reply_subscribe_that_never_answers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing an emitter whose first request is still subscribing to a broker that never
    answers returns after the bound, saying so, instead of waiting forever."""
    monkeypatch.setattr(replies, "_STEP_TIMEOUT", 0.2)
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    broker.subscribe_hangs = True
    emitter = he.Emitter(broker)
    with pytest.raises(RequestTimeoutError):
        await emitter.request(he.Event("ask", "k", {}), timeout=0.05)
    began = time.monotonic()
    await asyncio.wait_for(emitter.close(), 10)
    assert time.monotonic() - began < 5
    assert "gave up opening the reply channel" in caplog.text
    assert emitter.reply_channel in caplog.text
    await conn.close()


async def test_close_fails_waiting_requests_at_once_and_bounds_a_hanging_close(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A request waiting for its reply fails with ClosedError as soon as close() begins, and
    a subscription whose close never answers holds close() up for the bound only."""
    monkeypatch.setattr(replies, "_STEP_TIMEOUT", 1.0)
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    broker.close_hangs = True
    emitter = he.Emitter(broker)
    waiting = asyncio.create_task(emitter.request(he.Event("nobody", "k", {}), timeout=60))
    await eventually(lambda: bool(broker.subscribed), within=10, what="the reply channel")
    began = time.monotonic()
    closing = asyncio.create_task(emitter.close())
    with pytest.raises(ClosedError):
        await asyncio.wait_for(waiting, 10)
    assert not closing.done()  # the request did not wait for the subscription's close
    await asyncio.wait_for(closing, 10)
    assert time.monotonic() - began < 5
    assert "closing the subscription of the reply channel" in caplog.text
    await conn.close()


async def _answering(conn: he.Connection, channel: str) -> he.Receiver:
    replier = conn.emitter()
    receiver = conn.receiver("svc")

    @receiver.subscribe(channel, action="answer")
    async def answer(ctx: he.Context, msg: Message[Any]) -> None:
        await replier.reply(ctx, msg, {"ok": msg.payload})

    await receiver.start()
    return receiver


@pytest.mark.parametrize("how", ["ended", "failed for good"])
async def test_a_reply_subscription_that_ends_is_reopened_by_the_next_request(how: str) -> None:
    """The reply subscription ends under the emitter (the driver ended it, or its fetch
    failed for good): the request waiting fails at once naming why, and the next request
    opens a new reply channel and gets its reply; the old channel is deleted."""
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    emitter = he.Emitter(broker)
    receiver = await _answering(conn, "ask")
    first = await emitter.request(he.Event("ask", "k", 1), timeout=10)
    assert first.payload == {"ok": 1}
    old = emitter.reply_channel
    waiting = asyncio.create_task(emitter.request(he.Event("nobody", "k", {}), timeout=60))
    await eventually(lambda: broker.published == 2, within=10, what="the request sent")
    if how == "ended":
        await broker.subscribed[0].inner.close()  # its fetch returns [] from now on
    else:
        broker.subscribed[0].fail(DriverError("the broker fenced this member", retriable=False))
    with pytest.raises(DriverError, match="stopped") as caught:
        await asyncio.wait_for(waiting, 10)
    assert old in str(caught.value)
    again = await emitter.request(he.Event("ask", "k", 2), timeout=10)
    assert again.payload == {"ok": 2}
    assert emitter.reply_channel != old
    assert len(broker.subscribed) == 2
    assert broker.discarded == [old]
    await receiver.close()
    await emitter.close()
    assert broker.discarded == [old, emitter.reply_channel]
    await conn.close()


async def test_a_request_after_the_driver_closed_fails_at_once_naming_it() -> None:
    conn = he.connect("memory://")
    emitter = he.Emitter(conn.driver)
    receiver = await _answering(conn, "ask")
    await emitter.request(he.Event("ask", "k", 1), timeout=10)
    await receiver.close()
    await conn.driver.close()
    began = time.monotonic()
    with pytest.raises(he.HexaEventError, match="closed"):
        await emitter.request(he.Event("ask", "k", 2), timeout=30)
    assert time.monotonic() - began < 5
    await emitter.close()


async def test_an_emitter_on_a_connection_deletes_its_reply_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``he.Emitter(conn)`` (and an instrumented connection's emitter, made that way) deletes
    its reply channel on close like ``conn.emitter()``: the connection passes discard on."""
    conn = he.connect("memory://")
    deleted: list[str] = []

    async def delete_channels(channels: Sequence[str]) -> None:
        deleted.extend(channels)

    monkeypatch.setattr(conn.driver, "delete_channels", delete_channels)
    receiver = await _answering(conn, "ask")
    emitter = he.Emitter(conn)
    assert (await emitter.request(he.Event("ask", "k", 1), timeout=10)).payload == {"ok": 1}
    await receiver.close()
    await emitter.close()
    assert deleted == [emitter.reply_channel]
    await conn.close()


async def test_a_reply_channel_whose_subscribe_failed_is_deleted_on_close() -> None:
    """The reply channel was created, then subscribing to it failed (on Kafka: a topic and
    no group): the request raises the driver's error, and close() still deletes the
    channel."""
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    broker.subscribe_fails = DriverError("group authorization failed", retriable=False)
    emitter = he.Emitter(broker)
    with pytest.raises(DriverError, match="group authorization failed"):
        await emitter.request(he.Event("ask", "k", 1), timeout=10)
    await emitter.close()
    assert broker.discarded == [emitter.reply_channel]
    await conn.close()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "got 0"),
        (-1, "got -1"),
        (math.nan, "got nan"),
        (math.inf, "got inf"),
        (10**400, "got an integer of 401 digits"),
        (10**5000, "got an integer of about 5001 digits"),  # str() refuses it
        (True, "got True"),
        ("5", "got '5'"),
    ],
    ids=lambda value: type(value).__name__,
)
async def test_hostile_request_timeouts_are_refused_naming_the_parameter(
    value: Any, shown: str
) -> None:
    emitter = he.connect("memory://").emitter()
    with pytest.raises(he.ConfigurationError, match="request timeout must be") as caught:
        await emitter.request(he.Event("c", "k", {}), timeout=value)
    assert shown in str(caught.value)
    assert emitter.reply_channel == ""  # refused before anything was opened


async def test_a_timeout_error_of_the_send_is_not_reported_as_no_reply() -> None:
    """A TimeoutError raised while sending (a driver's or a middleware's own) reaches the
    caller as it is, not as RequestTimeoutError claiming no reply came within 30 s."""

    def slow_broker(call: PublishCall) -> PublishCall:
        async def publish(publication: Publication) -> None:
            raise TimeoutError("the broker did not confirm the write within 5s")

        return publish

    conn = he.connect("memory://")
    emitter = conn.emitter(publish_middlewares=[slow_broker])
    with pytest.raises(TimeoutError) as caught:
        await emitter.request(he.Event("ask", "k", {}), timeout=30)
    assert not isinstance(caught.value, RequestTimeoutError)
    assert "did not confirm the write" in str(caught.value)
    await conn.close()


async def test_a_request_timing_out_while_replies_cannot_be_read_says_so() -> None:
    """Reading the reply channel fails again and again (retriable: the broker is away): a
    request timing out says so, rather than asking whether a handler is subscribed; once
    the reading recovers, requests are answered again on the same channel."""
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    emitter = he.Emitter(broker)
    receiver = await _answering(conn, "ask")
    await emitter.request(he.Event("ask", "k", 1), timeout=10)
    broker.subscribed[0].fail(DriverError("connection refused by 127.0.0.1:9092"))
    with pytest.raises(RequestTimeoutError) as caught:
        await emitter.request(he.Event("nobody", "k", 2), timeout=0.5)
    assert "reading the reply channel fails" in str(caught.value)
    assert "connection refused by 127.0.0.1:9092" in str(caught.value)
    assert "is a handler subscribed" not in str(caught.value)
    broker.subscribed[0].fail(None)
    assert (await emitter.request(he.Event("ask", "k", 3), timeout=10)).payload == {"ok": 3}
    with pytest.raises(RequestTimeoutError, match="is a handler subscribed"):
        await emitter.request(he.Event("nobody", "k", 4), timeout=0.3)
    await receiver.close()
    await emitter.close()
    await conn.close()


async def test_a_request_whose_send_fails_while_the_emitter_closes_logs_no_stray_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """close() fails a request still sending, then the send fails too: the caller gets the
    send's error, and asyncio logs no 'Future exception was never retrieved' for the other."""
    gate, sending_now = asyncio.Event(), asyncio.Event()

    def refusing(call: PublishCall) -> PublishCall:
        async def publish(publication: Publication) -> None:
            sending_now.set()
            await gate.wait()
            raise DriverError("the broker refused the write")

        return publish

    conn = he.connect("memory://")
    emitter = conn.emitter(publish_middlewares=[refusing])
    sending = asyncio.create_task(emitter.request(he.Event("ask", "k", 1), timeout=10))
    await asyncio.wait_for(sending_now.wait(), 10)
    await emitter.close()
    gate.set()
    (error,) = await asyncio.gather(sending, return_exceptions=True)
    assert isinstance(error, DriverError), error
    assert "refused the write" in str(error)
    del error, sending  # the traceback holds the request's frame, and so its future
    for _ in range(3):  # what gather kept goes after a turn of the loop
        await asyncio.sleep(0)
        gc.collect()
    assert "never retrieved" not in caplog.text
    await conn.close()


async def test_a_hostile_reply_is_dropped_and_logged_in_one_short_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Replies with garbage, oversized or line-breaking headers (or none) on the reply
    channel are dropped and counted; the log shows their headers cut short on one line, and
    the next request is answered."""
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    conn = he.connect("memory://")
    receiver = await _answering(conn, "ask")
    emitter = conn.emitter()
    await emitter.request(he.Event("ask", "k", 1), timeout=10)
    channel = emitter.reply_channel
    forged = b"x\nCRITICAL forged log line " + b"y" * 10_000
    await conn.publish(
        [
            RawRecord(channel, "k", {env.REPLY_TO: b"\xff\xfe"}, b"{}"),
            RawRecord(channel, "k", {}, b"not json"),
            RawRecord(channel, "k", {env.REPLY_TO: forged, env.EVENT_ID: forged}, b"{}"),
            RawRecord(channel, "k", {CORRELATION_ID: b"\xff", env.EVENT_ID: b""}, b"{}"),
        ]
    )
    await eventually(lambda: emitter.dropped_replies == 4, within=10, what="4 drops")
    assert (await emitter.request(he.Event("ask", "k", 2), timeout=10)).payload == {"ok": 2}
    drops = [r.getMessage() for r in caplog.records if "dropped a reply" in r.getMessage()]
    assert len(drops) == 4
    assert all("\n" not in line and len(line) < 600 for line in drops), drops
    await receiver.close()
    await conn.close()


async def test_a_thousand_requests_waiting_then_close() -> None:
    """1,000 requests waiting for replies that never come, then close(): each fails with
    ClosedError at once, and nothing of the emitter is left running."""
    sent: list[Publication] = []

    def counting(call: PublishCall) -> PublishCall:
        async def publish(publication: Publication) -> None:
            await call(publication)
            sent.append(publication)

        return publish

    conn = he.connect("memory://")
    emitter = conn.emitter(publish_middlewares=[counting])
    before = asyncio.all_tasks()
    waiting = [
        asyncio.create_task(emitter.request(he.Event("nobody", f"k{i}", i), timeout=300))
        for i in range(1000)
    ]
    await eventually(lambda: len(sent) == 1000, within=30, what="1,000 requests sent")
    began = time.monotonic()
    await emitter.close()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert time.monotonic() - began < 10
    assert all(isinstance(r, ClosedError) for r in results), {type(r) for r in results}
    assert asyncio.all_tasks() - before - {asyncio.current_task()} == set()
    with pytest.raises(ClosedError):
        await emitter.request(he.Event("nobody", "k", 0), timeout=1)
    await conn.close()


async def test_closing_an_instrumented_connection_closes_its_emitters_reply_channels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An emitter of ``telemetry.instrument(conn)`` that sent a request: closing the
    connection closes the emitter first (its reply channel deleted, no 'stopped' error),
    as with a plain connection."""
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    plain = he.connect("memory://")
    deleted: list[str] = []

    async def delete_channels(channels: Sequence[str]) -> None:
        deleted.extend(channels)

    conn = make_otel().telemetry.instrument(plain)
    receiver = await _answering(plain, "ask")
    emitter = conn.emitter()
    assert (await emitter.request(he.Event("ask", "k", 1), timeout=10)).payload == {"ok": 1}
    await receiver.close()
    plain.driver.delete_channels = delete_channels  # type: ignore[method-assign]
    await conn.close()
    assert deleted == [emitter.reply_channel]
    assert "stopped" not in caplog.text
    with pytest.raises(ClosedError):
        await emitter.request(he.Event("ask", "k", 2), timeout=1)


async def test_an_emitter_used_once_and_dropped_is_still_closed_by_its_connection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``await conn.emitter().request(...)`` (what ``hexa-event request`` does) keeps no
    reference to the emitter: the connection still closes it, so its reply channel is
    deleted and its subscription does not end under it with an error."""
    caplog.set_level(logging.WARNING, logger="hexa_event.replies")
    conn = he.connect("memory://")
    deleted: list[str] = []

    async def delete_channels(channels: Sequence[str]) -> None:
        deleted.extend(channels)

    monkeypatch.setattr(conn.driver, "delete_channels", delete_channels)
    receiver = await _answering(conn, "ask")
    for n in range(3):
        reply = await conn.emitter().request(he.Event("ask", "k", n), timeout=10)
        assert reply.payload == {"ok": n}
    gc.collect()  # the emitters, referred to by nothing of the test's
    await receiver.close()
    await conn.close()
    assert len(set(deleted)) == 3
    assert all(channel.startswith("_reply.") for channel in deleted)
    assert "stopped" not in caplog.text


async def test_a_reading_failure_long_past_is_not_blamed_for_a_timeout() -> None:
    """Reading the reply channel failed once, then went on without a reply to read: a
    request timing out much later asks about the handler, not about that old failure."""
    conn = he.connect("memory://")
    broker = Broker(conn.driver)
    emitter = he.Emitter(broker)
    receiver = await _answering(conn, "ask")
    await emitter.request(he.Event("ask", "k", 1), timeout=10)
    wrapped = broker.subscribed[0]
    fetches = wrapped.fetches
    wrapped.fail(DriverError("a blip"))
    await eventually(lambda: wrapped.fetches > fetches + 1, within=10, what="a failed fetch")
    wrapped.fail(None)
    fetches = wrapped.fetches
    await eventually(lambda: wrapped.fetches > fetches, within=10, what="the next fetch")
    with pytest.raises(RequestTimeoutError, match="is a handler subscribed"):
        await emitter.request(he.Event("nobody", "k", 2), timeout=0.5)
    await receiver.close()
    await emitter.close()
    await conn.close()
