"""The one-pass read of the common delivery (``Dispatcher.first``) hands the handler exactly
what the careful path would, or steps aside; the receiver takes it for what we emit."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hexa_event as he
from hexa_event import Context, Message, RetryPolicy
from hexa_event import envelope as env
from hexa_event.codecs import JsonCodec
from hexa_event.context import User
from hexa_event.dispatch import SEALED_HEADERS, Dispatcher, Route, permanent_predicate
from hexa_event.driver import Delivery, Features, Outcome, PairHeaders, RawRecord, header_dict
from hexa_event.envelope import Envelope
from hexa_event.propagation import (
    BAGGAGE,
    CORRELATION_ID,
    GUEST_WIRE,
    LOCALE,
    TRACEPARENT,
    TRACESTATE,
    USER,
    default_propagator,
)
from hexa_event.publishing import pipeline
from hexa_event.testing.waiting import Collector
from hexa_event.wire import Chain

ACTION = "act"


@dataclass
class Order:
    id: str
    total: int


async def _nowhere(records: Any) -> None:
    raise AssertionError("nothing is published for a handler that returns")


def _dispatcher(handler: Any, payload_type: Any, *, dedup_ids: Any = "event") -> Dispatcher:
    route = Route(
        chain=Chain(action=ACTION, base=ACTION, policy=RetryPolicy(), dedup_ids=dedup_ids),
        handler=handler,
        payload_type=payload_type,
        is_permanent=permanent_predicate(None),
        propagator=default_propagator(),
    )
    features = Features(name="t", persistent=True)
    return Dispatcher(pipeline(_nowhere), features, route, asyncio.Event())


def _sealed(payload: Any, ctx: Context | None = None) -> RawRecord:
    return Envelope().seal(he.Event("orders", "k", payload), ctx)


names = st.sampled_from(
    [
        USER,
        CORRELATION_ID,
        LOCALE,
        env.PAYLOAD_ENCODER,
        env.REPLY_CHANNEL,
        env.EVENT_ID,
        env.EVENT_TIME,
        env.ATTEMPT,
        env.ROOT_EVENT_ID,
        env.ROOT_ACTION,
        env.SOURCE_CHANNEL,
        env.DELIVER_AT,
        TRACEPARENT,
        TRACESTATE,
        BAGGAGE,
        "x-app",
    ]
)
values = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=8),  # not bytes: the careful path names it
    st.sampled_from(
        [
            b"",
            b"json",
            b"raw",
            b"\xff\xfe",
            GUEST_WIRE,
            b'{"_user_identifier": "u-1", "_user_type": "_regular"}',
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            b"k1=v1,k2=v%202",
            str(int(time.time() * 1000)).encode(),
            str(int(time.time() * 1000) + 60_000).encode(),
            b"99999999999999999999",
        ]
    ),
)
bodies = st.sampled_from(
    [b'{"id": "o", "total": 1}', b'{"id": "o"}', b"[1, 2]", b"not json", b"", b'"text"']
)
FUZZ_EXAMPLES = int(os.environ.get("HEXA_FUZZ_EXAMPLES", "10000"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    changes=st.dictionaries(names, values, max_size=5),
    removed=st.sets(names, max_size=4),
    body=bodies,
    channel=st.sampled_from(["orders", f"{ACTION}.retry.1", f"{ACTION}.dlq"]),
    payload_type=st.sampled_from([None, Order, dict, bytes]),
    timestamp=st.sampled_from([None, 1_700_000_000.0]),
)
def test_first_hands_the_handler_what_the_careful_path_does(
    changes: dict[str, Any],
    removed: set[str],
    body: bytes,
    channel: str,
    payload_type: Any,
    timestamp: float | None,
) -> None:
    headers: dict[str, Any] = dict(_sealed({"id": "o", "total": 1}).headers)
    for name in removed:
        headers.pop(name, None)
    headers.update(changes)
    record = RawRecord(channel=channel, key="k", headers=headers, body=body)
    seen: list[tuple[Context, Message[Any]]] = []

    async def handler(ctx: Context, msg: Message[Any]) -> None:
        seen.append((ctx, msg))

    async def run() -> tuple[Context, Message[Any]] | None:
        dispatcher = _dispatcher(handler, payload_type)
        read = dispatcher.first(Delivery(record, coordinates="c-0-1", timestamp=timestamp))
        if read is not None:
            careful = Delivery(record, coordinates="c-0-1", timestamp=timestamp)
            assert await dispatcher.handle_careful(careful) is None
            assert careful.outcome is Outcome.ACK
        return read

    read = asyncio.run(run())
    if read is None:
        return  # the careful path reads it (test_fuzz_decode covers what it does then)
    assert len(seen) == 1, "the careful path ran the handler too"
    ctx, msg = read
    careful_ctx, careful_msg = seen[0]
    assert msg == careful_msg
    if not headers.get(CORRELATION_ID):  # a fresh correlation id each time
        assert ctx.correlation_id
        assert careful_ctx.correlation_id
        ctx = ctx.with_(correlation_id=careful_ctx.correlation_id)
    assert ctx == careful_ctx


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    changes=st.dictionaries(names, values, max_size=3),
    nulls=st.sets(names, max_size=2),
    removed=st.sets(names, max_size=2),
    body=bodies,
    timestamp=st.sampled_from([None, 1_700_000_000.0]),
)
def test_first_reads_client_pairs_as_their_dict(
    changes: dict[str, Any],
    nulls: set[str],
    removed: set[str],
    body: bytes,
    timestamp: float | None,
) -> None:
    """A record whose headers are its client's pairs (:class:`PairHeaders`, as the Kafka
    driver hands them, null values included) reads as the dict of those pairs does: what
    ``first`` hands the handler is the same, and our eight headers in their order are read
    by position (no dict built)."""
    headers: dict[str, Any] = dict(_sealed({"id": "o", "total": 1}).headers)
    for name in removed:
        headers.pop(name, None)
    headers.update(changes)
    pairs = [(name, None if name in nulls else value) for name, value in headers.items()]
    as_pairs = PairHeaders(pairs)
    as_dict = header_dict(pairs)

    def read(headers: Any) -> tuple[Context, Message[Any]] | None:
        record = RawRecord(channel="orders", key="k", headers=headers, body=body)
        delivery = Delivery(record, coordinates="c-0-1", timestamp=timestamp)
        return _dispatcher(_never, Order).first(delivery)

    from_pairs, from_dict = read(as_pairs), read(as_dict)
    if [name for name, _ in pairs] == list(SEALED_HEADERS) and from_pairs is not None:
        assert as_pairs._dict is None, "our eight headers are read by position"
    assert (from_pairs is None) == (from_dict is None)
    if from_pairs is None or from_dict is None:
        return
    (ctx, msg), (dict_ctx, dict_msg) = from_pairs, from_dict
    assert msg.headers is as_pairs  # read-only already: handed over as it is
    assert msg == dict_msg
    if not as_dict.get(CORRELATION_ID):  # a fresh correlation id each time
        ctx = ctx.with_(correlation_id=dict_ctx.correlation_id)
    assert ctx == dict_ctx


def test_first_reads_what_an_emitter_seals() -> None:
    """The common case takes the one pass: with a user-less context, with W3C headers."""
    ctx = Context(
        "corr-1",
        locale="fr",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        baggage={"tenant": "t 1"},
    )
    for record in (_sealed({"id": "o", "total": 3}), _sealed({"id": "o", "total": 3}, ctx)):
        dispatcher = _dispatcher(_never, Order)
        read = dispatcher.first(Delivery(record, coordinates="c-0-1"))
        assert read is not None
        got_ctx, msg = read
        assert msg.payload == Order("o", 3)
        assert (msg.id, msg.channel, msg.key, msg.attempt) == (
            record.headers[env.EVENT_ID].decode(),
            "orders",
            "k",
            1,
        )
        assert got_ctx.event_id == got_ctx.root_event_id == msg.id
        assert got_ctx.handler_action == got_ctx.root_handler_action == ACTION
    assert got_ctx.correlation_id == "corr-1"
    assert got_ctx.baggage == {"tenant": "t 1"}
    assert got_ctx.traceparent == ctx.traceparent


def test_first_reads_records_missing_headers_ours_always_write() -> None:
    """Another producer's record (no event id, no emit time: Go hexa's headers only) and one
    of ours missing a header take the one pass too: coordinates as id, the broker's time."""
    sealed = _sealed({"id": "o", "total": 3})
    go_headers = {
        name: value
        for name, value in sealed.headers.items()
        if name not in (env.EVENT_ID, env.EVENT_TIME)
    }
    without_reply = {n: v for n, v in sealed.headers.items() if n != env.REPLY_CHANNEL}
    for headers in (go_headers, without_reply, {}):
        record = RawRecord("orders", "k", headers, sealed.body)
        read = _dispatcher(_never, Order).first(
            Delivery(record, coordinates="orders-0-7", timestamp=1_700_000_000.0)
        )
        assert read is not None, sorted(headers)
        ctx, msg = read
        assert msg.payload == Order("o", 3)
        assert msg.reply_channel == ""
        if env.EVENT_ID in headers:
            assert msg.id == sealed.headers[env.EVENT_ID].decode()
        else:
            assert msg.id == ctx.event_id == ctx.root_event_id == "orders-0-7"
            assert msg.timestamp is not None
            assert msg.timestamp.timestamp() == 1_700_000_000.0


async def _never(ctx: Context, msg: Message[Any]) -> None:
    raise AssertionError("not called")


def test_first_reads_eight_dict_headers_by_name_only_when_they_are_ours() -> None:
    """A dict of exactly our eight headers (as Pulsar hands them: sorted by name) is read in
    one call; eight headers with one of ours swapped for another (a retry copy's attempt, a
    due time, a root, a source, a trace) read as any other record: what the careful path
    reads, or nothing."""
    sealed = _sealed({"id": "o", "total": 3})
    ours = dict(sorted(sealed.headers.items()))
    assert len(ours) == len(SEALED_HEADERS)
    read = _dispatcher(_never, Order).first(
        Delivery(RawRecord("orders", "k", ours, sealed.body), coordinates="c")
    )
    assert read is not None
    assert read[1].payload == Order("o", 3)
    assert read[1].id == ours[env.EVENT_ID].decode()
    others = {
        env.ATTEMPT: b"2",
        env.DELIVER_AT: b"1",
        env.ROOT_EVENT_ID: b"root-1",
        env.SOURCE_CHANNEL: b"elsewhere",
        TRACEPARENT: b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    for swapped in SEALED_HEADERS:
        for name, value in others.items():
            headers = {n: v for n, v in ours.items() if n != swapped} | {name: value}
            assert len(headers) == len(SEALED_HEADERS)
            record = RawRecord("orders", "k", headers, sealed.body)
            seen: list[tuple[Context, Message[Any]]] = []

            async def handler(ctx: Context, msg: Message[Any], seen: Any = seen) -> None:
                seen.append((ctx, msg))

            dispatcher = _dispatcher(handler, Order)
            got = dispatcher.first(Delivery(record, coordinates="c"))
            if got is None:
                continue  # the careful path reads it
            careful = Delivery(record, coordinates="c")
            assert asyncio.run(dispatcher.handle_careful(careful)) is None
            ctx, msg = got
            careful_ctx, careful_msg = seen[0]
            assert msg == careful_msg, (swapped, name)
            if swapped == CORRELATION_ID:  # a fresh correlation id each time
                ctx = ctx.with_(correlation_id=careful_ctx.correlation_id)
            assert ctx == careful_ctx, (swapped, name)


def test_first_steps_aside_for_what_it_does_not_read() -> None:
    """Copies, scheduled events, other codecs, users, Go ids: the careful path reads them."""
    plain = _sealed({"id": "o", "total": 3})
    user = Envelope().seal(he.Event("orders", "k", {}), Context(user=User(id="u-1")))
    cases = [
        RawRecord("orders", "k", {**plain.headers, env.ATTEMPT: b"2"}, plain.body),
        RawRecord(f"{ACTION}.retry.1", "k", dict(plain.headers), plain.body),
        RawRecord("orders", "k", {**plain.headers, env.DELIVER_AT: b"1"}, plain.body),
        RawRecord("orders", "k", {**plain.headers, env.PAYLOAD_ENCODER: b"raw"}, plain.body),
        RawRecord("orders", "k", {**plain.headers, env.EVENT_ID: b"\xff"}, plain.body),
        RawRecord("orders", "k", dict(plain.headers), b"not json"),
        user,
    ]
    for record in cases:
        assert _dispatcher(_never, Order).first(Delivery(record, coordinates="c")) is None
    go = _dispatcher(_never, Order, dedup_ids="go")
    assert go.first(Delivery(plain, coordinates="c")) is None


def test_first_follows_a_codec_registered_over_json() -> None:
    """A decoder is kept between deliveries: registering another json codec replaces it."""

    class Upper(JsonCodec):
        def decode(self, data: bytes, target: Any) -> Any:
            return {"upper": super().decode(data, target)["s"].upper()}

    dispatcher = _dispatcher(_never, None)
    delivery = Delivery(_sealed({"s": "abc"}), coordinates="c")
    read = dispatcher.first(delivery)
    assert read is not None
    assert read[1].payload == {"s": "abc"}
    builtin = he.get_codec("json")
    he.register_codec(Upper(), replace=True)
    try:
        read = dispatcher.first(delivery)
        assert read is not None
        assert read[1].payload == {"upper": "ABC"}
    finally:
        he.register_codec(builtin, replace=True)
    read = dispatcher.first(delivery)
    assert read is not None
    assert read[1].payload == {"s": "abc"}


async def test_a_handler_failing_after_the_one_pass_is_retried_then_dead_lettered() -> None:
    """Through a receiver: the common path's failures take the retry chain as before."""
    driver = he.connect(f"memory://first-{uuid.uuid4().hex}")
    attempts = Collector()
    letters = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe(
        "orders", action=ACTION, payload=Order, retry=RetryPolicy(max_retries=2, initial_delay=0)
    )
    async def handle(ctx: Context, msg: Message[Order]) -> None:
        attempts.add((msg.attempt, ctx.correlation_id, ctx.root_handler_action))
        raise RuntimeError("no")

    @receiver.subscribe(f"{ACTION}.dlq", action="letters")
    async def dead(ctx: Context, msg: Message[Any]) -> None:
        letters.add((msg.headers[env.DEAD_LETTER_REASON], ctx.correlation_id))

    async with receiver:
        await driver.emitter().emit(he.Event("orders", "k", Order("o", 1)), ctx=Context("c-9"))
        await letters.wait_for(1, within=10)
    assert attempts.items == [(1, "c-9", ACTION), (2, "c-9", ACTION), (3, "c-9", ACTION)]
    assert letters.items == [(b"retries-exhausted", "c-9")]
