"""A receiver on Pulsar attacked on the real broker: garbage messages a foreign producer
wrote amid ours, handlers raising BaseException subclasses, a hanging handler across
close, and the driver closed under a running receiver. Whatever happens, every message is
settled once (handled, or dead-lettered as poison: the dead-letter channel holds it), none
is lost or handled twice, one key's messages keep their order, the consumer goes on and
health says why work cannot progress."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pulsar
import pytest

import hexa_event as he
from attack_helpers import base_exceptions_round, emit, read_again, reports_stall
from hexa_event import envelope as env
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.propagation import CORRELATION_ID
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"pa-{tag}", f"pa-act-{tag}"


def _topic(channel: str) -> str:
    return f"persistent://public/default/{channel}"


def _body(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def _ours(n: int, garbage: dict[str, str] | None = None) -> dict[str, str]:
    """The properties our emitters write, with ``garbage`` values in place of some."""
    values = {
        CORRELATION_ID: "corr",
        env.EVENT_ID: f"id-{n}-{uuid.uuid4().hex}",
        env.EVENT_TIME: str(int(time.time() * 1000)),
        env.CONTENT_TYPE: "application/json",
        env.PAYLOAD_ENCODER: "json",
    }
    values.update(garbage or {})
    return values


class _Raw:
    """A message as a foreign producer writes it: key and properties as bytes or text."""

    def __init__(self, body: bytes, key: bytes | str | None = None, props: Any = None) -> None:
        self.body, self.key, self.props = body, key, props or {}


def _produce(pulsar_url: str, channel: str, messages: list[_Raw]) -> None:
    """Write ``messages`` in order with a raw pulsar-client producer (bytes through the
    binding's builder, which takes what the public API refuses)."""
    client = pulsar.Client(pulsar_url)
    try:
        producer = client.create_producer(_topic(channel), batching_enabled=False)
        for message in messages:
            builder = pulsar._pulsar.MessageBuilder()  # type: ignore[attr-defined]
            builder.content(message.body)
            if message.key is not None:
                builder.partition_key(message.key)
            props = message.props
            for name, value in props.items() if isinstance(props, dict) else props:
                builder.property(name, value)
            producer._producer.send(builder.build())
    finally:
        client.close()


def _count_dead_letters(pulsar_url: str, channel: str, at_least: int) -> int:
    """How many messages the dead-letter channel holds (read from its start, waiting up to
    30 s for ``at_least``)."""
    client = pulsar.Client(pulsar_url)
    try:
        reader = client.create_reader(_topic(channel), pulsar.MessageId.earliest)
        count = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                reader.read_next(500)
            except pulsar.Timeout:
                if count >= at_least:
                    break
                continue
            count += 1
        return count
    finally:
        client.close()


async def _emit(driver: PulsarDriver, channel: str, pairs: list[tuple[str, int]]) -> None:
    """Provision ``channel`` (so a subscription made later reads from its start), then emit
    one event ``{"n": n}`` per (key, n), in order."""
    await driver.provision([channel])
    await emit(driver, channel, pairs)


@pytest.mark.parametrize("batched", [False, True], ids=["single", "batch"])
async def test_garbage_messages_amid_ours_are_each_settled_once(
    make_driver: MakeDriver, pulsar_url: str, batched: bool
) -> None:
    """Messages no emitter of ours writes, among runs of ours under three keys: those the
    core can read are handled once (hundreds of properties, no key, an empty key, a key or
    property that is not UTF-8 read without them, nonsense times and attempts), the others
    (an empty body, a body that is not JSON) dead-lettered; ours around them handled once
    in order per key; the next receiver of the action reads nothing again."""
    channel, action = _names()
    driver = await make_driver()
    numbers = iter(range(1000))
    readable: dict[int, str] = {}
    messages: list[_Raw] = []

    def ours(count: int) -> None:
        for _ in range(count):
            n = next(numbers)
            readable[n] = "ours"
            messages.append(_Raw(_body(n), f"k{n % 3}", _ours(n)))

    def odd(what: str, key: bytes | str | None, props: Any) -> None:
        n = next(numbers)
        readable[n] = what
        messages.append(_Raw(_body(n), key, props))

    ours(10)
    odd("hundreds", "o1", {f"x-{i}": str(i) for i in range(300)})
    odd("no key", None, {"x-ok": "1"})
    odd("empty key", "", {"x-ok": "1"})
    odd("odd key", b"\xff\xfe", {"x-ok": "1"})
    odd("odd name", "o2", [(b"x-\xff", b"v"), (b"x-ok", b"1")])
    odd("odd value", "o3", [(b"x-ok", b"\xfe\xff")])
    odd("odd id", "o4", [(env.EVENT_ID.encode(), b"\xff\xfe"), (b"x-ok", b"1")])
    ours(5)
    odd("time 400 digits", "o5", _ours(0, {env.EVENT_TIME: "9" * 400}))
    odd("time NaN", "o6", _ours(0, {env.EVENT_TIME: "NaN"}))
    odd("time negative", "o7", _ours(0, {env.EVENT_TIME: "-5"}))
    odd("attempt abc", "o8", _ours(0, {env.ATTEMPT: "abc"}))
    odd("attempt huge", "o9", _ours(0, {env.ATTEMPT: str(10**30)}))
    odd("deliver 1900", "o10", _ours(0, {env.DELIVER_AT: str(-2208988800000)}))
    odd("not-before 9999", "o11", _ours(0, {"hexa.not_before": "253402300799000"}))
    # The latest not-before a property of 13 digits can say (2286): held, it kept its place
    # in the window until then.
    odd("not-before 2286", "o12", _ours(0, {"hexa.not_before": "9" * 13}))
    ours(5)
    poison = [
        _Raw(b"", "p1", {"x-ok": "1"}),
        _Raw(b"{not json", "p2", _ours(0)),
        _Raw(b"\xff\xfe", b"\xfe\xff", {"x-ok": "1"}),
    ]
    messages.extend(poison)
    ours(10)
    seen: dict[str, list[he.Message[dict[str, int]]]] = defaultdict(list)
    calls = 0
    await driver.provision([channel])
    await asyncio.to_thread(_produce, pulsar_url, channel, messages)
    receiver = he.Receiver(driver, name=action)

    def note(msg: he.Message[dict[str, int]]) -> None:
        seen[readable[msg.payload["n"]]].append(msg)

    if batched:

        @receiver.subscribe(channel, action=action, batch=he.Batch(16, 0.05))
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
            nonlocal calls
            calls += 1
            for msg in msgs:
                note(msg)

    else:

        @receiver.subscribe(channel, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            note(msg)

    async with receiver:

        def settled() -> bool:
            counters = receiver.health()["actions"][action]
            handled = sum(map(len, seen.values()))
            return handled == len(readable) and counters["dead_lettered"] == len(poison)

        await eventually(settled, within=60, what="every message handled or dead-lettered")
        await eventually(lambda: receiver.health()["actions"][action]["lag"] == 0, within=30)
        health = receiver.health()
        assert health["healthy"], health["reason"]
        counters = health["actions"][action]
        assert counters["handled"] == len(readable)
        assert counters["poison"] == len(poison)
    assert all(len(seen[what]) == 1 for what in set(readable.values()) - {"ours"}), {
        what: len(ms) for what, ms in seen.items()
    }
    ours_seen = [m.payload["n"] for m in seen["ours"]]
    assert sorted(ours_seen) == [n for n, what in readable.items() if what == "ours"]
    for key in ("k0", "k1", "k2"):
        in_key = [m.payload["n"] for m in seen["ours"] if m.key == key]
        assert in_key == sorted(in_key)
    assert len(seen["hundreds"][0].headers) >= 300
    assert seen["no key"][0].key == seen["empty key"][0].key == ""
    # What is not UTF-8 is left out, the rest kept: the key, or the properties.
    assert seen["odd key"][0].key == ""
    assert seen["odd key"][0].headers["x-ok"] == b"1"
    assert seen["odd name"][0].key == "o2"
    assert seen["odd value"][0].key == "o3"
    assert seen["odd id"][0].key == "o4"
    now = time.time()
    for what in ("time 400 digits", "time NaN", "time negative"):
        stamp = seen[what][0].timestamp
        assert stamp is not None, what  # the broker's time stands in
        assert abs(stamp.timestamp() - now) < 600, (what, stamp)
    assert await asyncio.to_thread(
        _count_dead_letters, pulsar_url, f"{action}.dlq", len(poison)
    ) == len(poison)
    await he.Emitter(driver).emit(he.Event(channel, "end", {"n": -1}))
    assert await read_again(driver, channel, action, 1) == [-1]


@pytest.mark.parametrize("kind", ["async", "sync", "batch"])
async def test_a_handler_raising_base_exceptions_fails_its_event_alone(
    make_driver: MakeDriver, kind: str
) -> None:
    """SystemExit, KeyboardInterrupt, a BaseException of the handler's own, a CancelledError
    the handler raises itself (it is not being cancelled) and GeneratorExit are handler
    failures: the event (for a batch handler: its batch) goes to its retry channel and is
    handled on its second attempt, the others once in order; the receiver goes on and
    nothing is read again."""
    channel, action = _names()
    driver = await make_driver()
    await base_exceptions_round(driver, channel, action, kind, _emit, read_again)


@pytest.mark.parametrize("kind", ["async", "sync", "batch"])
async def test_a_hanging_handler_is_reported_and_close_gives_back_exactly_its_events(
    make_driver: MakeDriver, kind: str
) -> None:
    """A handler that hangs on one key: the other keys go on, health says the action
    stalls (naming it), and close (its drain cut at drain_timeout) returns in bounded time
    and gives back exactly the events not handled: the next receiver of the action reads
    those, each key's in order, and none of those handled."""
    channel, action = _names()
    driver = await make_driver()
    pairs = [("hang" if n % 15 == 7 else f"k{n % 9}", n) for n in range(120)]
    key_of = dict((n, key) for key, n in pairs)
    handled: list[int] = []
    stop_thread = threading.Event()
    await driver.provision([channel])
    await he.Emitter(driver).emit_many(he.Event(channel, key, {"n": n}) for key, n in pairs)
    receiver = he.Receiver(driver, name=action, stall_timeout=0.5, drain_timeout=0.5)
    if kind == "sync":

        @receiver.subscribe(channel, action=action, concurrency=4)
        def handle_sync(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.key == "hang":
                stop_thread.wait(120)
                return  # (after close: its result is ignored)
            handled.append(msg.payload["n"])

    elif kind == "batch":

        @receiver.subscribe(channel, action=action, batch=he.Batch(8, 0.05))
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
            if any(msg.key == "hang" for msg in msgs):
                await asyncio.Event().wait()  # until close cancels it
            handled.extend(msg.payload["n"] for msg in msgs)

    else:

        @receiver.subscribe(channel, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.key == "hang":
                await asyncio.Event().wait()  # until close cancels it
            handled.append(msg.payload["n"])

    await receiver.start()
    try:
        if kind != "batch":  # (a batch hangs with whatever came with the key)
            others = {n for key, n in pairs if key != "hang"}
            await eventually(lambda: set(handled) == others, within=60, what="others handled")

        await eventually(
            lambda: reports_stall(receiver, action),
            within=30,
            what="health reports the hanging handler",
        )
    finally:
        started = time.monotonic()
        await receiver.close()
        closing = time.monotonic() - started
        stop_thread.set()
    assert closing < 15
    assert len(handled) == len(set(handled))  # once each
    rest = [n for _, n in pairs if n not in set(handled)]
    assert "hang" not in {key_of[n] for n in handled}
    again = await read_again(driver, channel, action, len(rest))
    assert sorted(again) == rest
    for key in {key_of[n] for n in rest}:
        assert [n for n in again if key_of[n] == key] == [n for n in rest if key_of[n] == key]


@pytest.mark.parametrize("kind", ["single", "batch"])
async def test_close_while_events_are_in_flight_settles_them(
    make_driver: MakeDriver, kind: str
) -> None:
    """close() while handlers hold events: the drain lets those in the lanes finish (they
    are released once it began) and writes their acks; anything not handled goes back. The
    next receiver reads exactly the events not handled, none twice. (How many a batch
    handler gets through before every key waits is up to how its batches were cut: a
    batch cut early lets the keys drift apart, so one held at the gate may keep earlier
    events of other keys; the close waits for a held handler and one handled event.)"""
    channel, action = _names()
    driver = await make_driver()
    pairs = [(f"k{n % 5}", n) for n in range(200)]
    key_of = {n: key for key, n in pairs}
    handled: list[int] = []
    held: list[int] = []  # the first event of each handler call waiting at the gate
    gate = asyncio.Event()
    await driver.provision([channel])
    await he.Emitter(driver).emit_many(he.Event(channel, key, {"n": n}) for key, n in pairs)
    receiver = he.Receiver(driver, name=action, drain_timeout=30)
    if kind == "batch":

        @receiver.subscribe(channel, action=action, batch=he.Batch(8, 0.05))
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[dict[str, int]]]) -> None:
            if any(msg.payload["n"] >= 50 for msg in msgs):
                held.append(msgs[0].payload["n"])
                await gate.wait()
            handled.extend(msg.payload["n"] for msg in msgs)

    else:

        @receiver.subscribe(channel, action=action, concurrency=4)
        async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
            if msg.payload["n"] >= 50:
                held.append(msg.payload["n"])
                await gate.wait()
            handled.append(msg.payload["n"])

    await receiver.start()
    info = receiver.subscriptions[action]
    enough = 1 if kind == "batch" else 40  # (single: every key gets to its 50s)
    try:
        await eventually(
            lambda: info.in_flight > 0 and held and len(handled) >= enough,
            within=60,
            what=f"a handler held at the gate and {enough} event(s) handled",
        )
    finally:
        closing = asyncio.create_task(receiver.close())
        await eventually(lambda: receiver.health()["state"] == "closed", within=10, what="closing")
        gate.set()
        await asyncio.wait_for(closing, 60)
    assert len(handled) == len(set(handled))
    rest = [n for _, n in pairs if n not in set(handled)]
    await he.Emitter(driver).emit(he.Event(channel, "end", {"n": 1000}))
    again = await read_again(driver, channel, action, len(rest) + 1)
    assert sorted(again) == [*rest, 1000]
    for key in {key_of[n] for n in rest}:
        assert [n for n in again if key_of[n] == key] == [n for n in rest if key_of[n] == key]


async def test_the_driver_closed_under_a_running_receiver_is_reported(
    make_driver: MakeDriver,
) -> None:
    """The driver closed while its receiver runs with events in flight: health says the
    action cannot go on (with the reason), the handlers' late settlements raise nothing,
    close returns in bounded time, and a new driver's receiver of the action reads every
    event not handled (those handled after the driver closed may come again: their acks
    could not be written)."""
    channel, action = _names()
    driver = await make_driver()
    pairs = [(f"k{n % 5}", n) for n in range(100)]
    handled: list[int] = []
    gate = asyncio.Event()
    await driver.provision([channel])
    await he.Emitter(driver).emit_many(he.Event(channel, key, {"n": n}) for key, n in pairs)
    receiver = he.Receiver(driver, name=action, drain_timeout=1)

    @receiver.subscribe(channel, action=action, concurrency=4)
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        if msg.payload["n"] >= 30:
            await gate.wait()
        handled.append(msg.payload["n"])

    await receiver.start()
    info = receiver.subscriptions[action]
    try:
        await eventually(lambda: info.in_flight > 0 and len(handled) >= 20, within=60)
        before = list(handled)
        await asyncio.wait_for(driver.close(), 30)

        def unhealthy() -> bool:
            health = receiver.health()
            reason = health["reason"]
            return not health["healthy"] and "the subscription ended" in reason

        await eventually(unhealthy, within=30, what="health reports the closed driver")
        gate.set()
        await eventually(lambda: info.in_flight == 0, within=30, what="the handlers ended")
    finally:
        gate.set()
        started = time.monotonic()
        await asyncio.wait_for(receiver.close(), 30)
    assert time.monotonic() - started < 15
    rest = {n for _, n in pairs} - set(before)
    fresh = await make_driver()
    again = await read_again(fresh, channel, action, len(rest - set(handled)))
    assert rest - set(handled) <= set(again) <= rest


async def test_garbage_copies_on_a_retry_channel_are_handled_or_dead_lettered(
    make_driver: MakeDriver, pulsar_url: str
) -> None:
    """Copies a foreign producer wrote on the action's retry channel with nonsense chain
    headers: an attempt of "abc" or 10**30, or a retry time of 400 digits, is poison
    (dead-lettered); a retry time in the year 9999 waits no longer than the policy's
    longest back-off, one in the past or an attempt below 1 not at all; a copy that keeps
    failing is dead-lettered once its retries are spent. The receiver goes on."""
    channel, action = _names()
    driver = await make_driver()
    chain = {env.ROOT_ACTION: action, env.SOURCE_CHANNEL: channel}
    cases: dict[int, dict[str, str]] = {
        0: {env.ATTEMPT: "abc"},
        1: {env.ATTEMPT: str(10**30)},
        2: {env.ATTEMPT: "2", env.RETRY_AT: "9" * 400},
        3: {env.ATTEMPT: "2", env.RETRY_AT: "253402300799000"},  # the year 9999
        4: {env.ATTEMPT: "2", env.RETRY_AT: "-5"},
        5: {env.ATTEMPT: "-3"},
        6: {env.ATTEMPT: "2"},  # fails on every attempt
    }
    poison = {0, 1, 2}
    attempts: dict[int, list[int]] = defaultdict(list)
    handled: list[int] = []
    await driver.provision([channel])
    receiver = he.Receiver(driver, name=action)
    policy = he.RetryPolicy(max_retries=3, initial_delay=0.1, max_delay=1)

    @receiver.subscribe(channel, action=action, retry=policy, concurrency=4)
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        n = msg.payload["n"]
        attempts[n].append(msg.attempt)
        if n == 6:
            raise RuntimeError("fails for good")
        handled.append(n)

    messages = [_Raw(_body(n), f"r{n}", _ours(n, {**chain, **c})) for n, c in cases.items()]
    async with receiver:
        await asyncio.to_thread(_produce, pulsar_url, f"{action}.retry.1", messages)
        await he.Emitter(driver).emit(he.Event(channel, "end", {"n": 100}))

        def settled() -> bool:
            counters = receiver.health()["actions"][action]
            return len(handled) == 4 and counters["dead_lettered"] == len(poison) + 1

        await eventually(settled, within=60, what="every copy handled or dead-lettered")
        health = receiver.health()
        assert health["healthy"], health["reason"]
        assert health["actions"][action]["poison"] == len(poison)
    assert sorted(handled) == [3, 4, 5, 100]
    assert not poison & set(attempts)  # never reached the handler
    assert attempts[6] == [2, 3, 4]
    assert attempts[5] == [2]  # (read from retry.1: at least the second attempt)
    assert (
        await asyncio.to_thread(_count_dead_letters, pulsar_url, f"{action}.dlq", len(poison) + 1)
        == len(poison) + 1
    )


async def test_go_mode_bodies_that_are_not_envelopes_are_dead_lettered(
    make_driver: MakeDriver, pulsar_url: str
) -> None:
    """In Go mode (``body="go"``) a body that is not Go's envelope is handed over as it is:
    a truncated envelope, one whose values are not base64, a JSON document nested 10,000
    deep, bytes that are not UTF-8; each is dead-lettered (not our JSON payload) and the
    subscription goes on to our events around them. Before, the nested document raised
    RecursionError reading the envelope and failed the whole subscription."""
    channel, action = _names()
    driver = await make_driver(body="go")
    garbage = [
        b'{"header":{"HEXA_EVENT_ID":"',
        b'{"header":{"x":"!!"},"payload":"not base64"}',
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b"\xff\xfe{",
    ]
    handled: list[int] = []
    await driver.provision([channel])
    emitter = he.Emitter(driver)
    await emitter.emit_many(he.Event(channel, f"k{n % 3}", {"n": n}) for n in range(10))
    await asyncio.to_thread(
        _produce, pulsar_url, channel, [_Raw(body, f"g{i}") for i, body in enumerate(garbage)]
    )
    await emitter.emit_many(he.Event(channel, f"k{n % 3}", {"n": n}) for n in range(10, 20))
    receiver = he.Receiver(driver, name=action)

    @receiver.subscribe(channel, action=action, concurrency=4)
    async def handle(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        handled.append(msg.payload["n"])

    async with receiver:

        def settled() -> bool:
            counters = receiver.health()["actions"][action]
            return len(handled) == 20 and counters["dead_lettered"] == len(garbage)

        await eventually(settled, within=60, what="ours handled, the garbage dead-lettered")
        health = receiver.health()
        assert health["healthy"], health["reason"]
    assert sorted(handled) == list(range(20))
    assert await asyncio.to_thread(
        _count_dead_letters, pulsar_url, f"{action}.dlq", len(garbage)
    ) == len(garbage)
