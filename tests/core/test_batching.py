"""Batch handlers (issue 22): options, signatures, and what the conformance suite does not
reach (sync handlers, BaseException, a wrong BatchFailed, in-place retries, cut drains)."""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

import hexa_event as he
from hexa_event.codecs import JsonCodec
from hexa_event.propagation import CompositePropagator
from hexa_event.testing import eventually
from hexa_event.testing.waiting import Collector

FAST = he.RetryPolicy(max_retries=1, initial_delay=0.01)


def _url() -> str:
    return f"memory://batch-{uuid.uuid4().hex}"


# -- options and signatures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_size", 0),
        ("max_size", -5),
        ("max_size", 10**6),
        ("max_size", 2.5),
        ("max_size", True),
        ("max_wait", 0),
        ("max_wait", -1.0),
        ("max_wait", math.nan),
        ("max_wait", math.inf),
        ("max_wait", 10**9),
        ("max_size", 10**400),
        # past int's string limit (4300 digits): was a ValueError, not a ConfigurationError
        pytest.param("max_size", 10**5000, id="max_size-5001-digits"),
        pytest.param("max_wait", -(10**5000), id="max_wait-minus-5001-digits"),
        ("max_wait", "0.1"),
    ],
)
def test_batch_refuses_bad_numbers_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(he.ConfigurationError, match=f"Batch {field}"):
        he.Batch(**{field: value})


def test_batch_accepts_sane_values() -> None:
    batch = he.Batch(max_size=500, max_wait=0.2)
    assert (batch.max_size, batch.max_wait) == (500, 0.2)


async def _one(ctx: he.Context, msg: he.Message[Any]) -> None: ...


async def _many(ctx: he.Context, msgs: list[he.Message[Any]]) -> None: ...


def _many_sync(ctx: he.Context, msgs: Sequence[he.Message[Any]]) -> None: ...


async def _plain(ctx, msgs):  # type: ignore[no-untyped-def]
    ...


async def _three(ctx: Any, msgs: Any, extra: Any) -> None: ...


def test_a_single_message_handler_is_refused_with_batch() -> None:
    receiver = he.connect(_url()).receiver("svc")
    with pytest.raises(he.ConfigurationError) as caught:
        receiver.subscribe("c", action="a", batch=he.Batch(), handler=_one)
    assert "list[he.Message[T]]" in str(caught.value)
    assert "drop batch=" in str(caught.value)


def test_a_batch_handler_is_refused_without_batch() -> None:
    receiver = he.connect(_url()).receiver("svc")
    for handler in (_many, _many_sync):
        with pytest.raises(he.ConfigurationError, match=r"add batch=he\.Batch"):
            receiver.subscribe("c", action="a", handler=handler)


def test_batch_handlers_that_fit_are_accepted() -> None:
    receiver = he.connect(_url()).receiver("svc")
    receiver.subscribe("c", action="a", batch=he.Batch(), handler=_many)
    receiver.subscribe("c", action="b", batch=he.Batch(), handler=_many_sync)
    receiver.subscribe("c", action="d", batch=he.Batch(), handler=_plain)
    receiver.subscribe("c", action="e", handler=_plain)  # unannotated: either way
    assert receiver.subscriptions["a"].concurrency == 1  # one batch at a time by default


def test_wrong_arity_and_wrong_batch_option_are_refused() -> None:
    receiver = he.connect(_url()).receiver("svc")
    with pytest.raises(he.ConfigurationError, match=r"msgs: list\[he.Message\[T\]\]"):
        receiver.subscribe("c", action="a", batch=he.Batch(), handler=_three)
    with pytest.raises(he.ConfigurationError, match=r"batch= takes he\.Batch"):
        receiver.subscribe("c", action="a", batch=500, handler=_many)  # type: ignore[arg-type]


def _gen(ctx: he.Context, msgs: Any) -> Any:
    yield from msgs


async def _agen(ctx: he.Context, msgs: Any) -> Any:
    for m in msgs:
        yield m


class _Yielding:
    def __call__(self, ctx: he.Context, msgs: Any) -> Any:
        yield from msgs


@pytest.mark.parametrize("handler", [_gen, _agen, _Yielding(), functools.partial(_gen)])
@pytest.mark.parametrize("batch", [he.Batch(), None])
def test_a_generator_handler_is_refused(handler: Any, batch: he.Batch | None) -> None:
    """Calling a generator runs none of its body: before, such a handler was accepted and
    every event acked unhandled."""
    receiver = he.connect(_url()).receiver("svc")
    with pytest.raises(he.ConfigurationError, match=r"generator \(it yields\)"):
        receiver.subscribe("c", action="a", batch=batch, handler=handler)


def test_batch_failed_refuses_what_it_cannot_use() -> None:
    with pytest.raises(he.ConfigurationError, match="message index"):
        he.BatchFailed({0: "not an exception"})  # type: ignore[dict-item]
    with pytest.raises(he.ConfigurationError, match="message index"):
        he.BatchFailed({1.5: ValueError()})  # type: ignore[dict-item]
    assert he.BatchFailed({0: ValueError(), "id": KeyError()}).failures.keys() == {0, "id"}


# -- running ----------------------------------------------------------------------------------


async def _running(
    receiver: he.Receiver, driver: he.Connection, channel: str, count: int
) -> list[str]:
    await receiver.start()
    return await driver.emitter().emit_many(
        he.Event(channel, f"k{i}", {"i": i}) for i in range(count)
    )


async def test_sync_batch_handler_runs_in_a_thread() -> None:
    driver = he.connect(_url())
    threads = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="a", batch=he.Batch(max_size=10, max_wait=0.01))
    def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        for _ in msgs:
            threads.add(threading.get_ident())

    async with receiver:
        await _running(receiver, driver, "c", 5)
        await threads.wait_for(5, within=10)
    assert threading.get_ident() not in threads.items


async def test_a_lambda_around_an_async_handler_runs_it() -> None:
    """A plain callable that returns a coroutine (``lambda c, m: handle(c, m)``): before, its
    coroutine was never awaited and every event was acked unhandled (single and batch
    handlers alike); now it runs, and what it raises fails the events."""
    driver = he.connect(_url())
    got = Collector()
    receiver = driver.receiver("svc")

    async def many(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        for m in msgs:
            got.add(("many", m.payload["i"]))

    async def one(ctx: he.Context, msg: he.Message[Any]) -> None:
        got.add(("one", msg.payload["i"]))
        raise he.PermanentError("bad")

    batch = he.Batch(max_size=10, max_wait=0.01)
    receiver.subscribe("c", action="a", batch=batch, handler=lambda c, m: many(c, m))
    receiver.subscribe("c", action="b", handler=lambda c, m: one(c, m))
    async with receiver:
        await _running(receiver, driver, "c", 2)
        await got.wait_for(4, within=10)
        await eventually(lambda: receiver.health()["actions"]["b"]["dead_lettered"] == 2, within=10)
    assert sorted(got.items) == [("many", 0), ("many", 1), ("one", 0), ("one", 1)]
    assert receiver.health()["actions"]["a"]["handled"] == 2


class Interrupt(BaseException):
    pass


async def test_a_base_exception_fails_every_item_and_settles_them() -> None:
    driver = he.connect(_url())
    runs = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="a", retry=FAST, batch=he.Batch(max_size=10, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        for m in msgs:
            runs.add(m.attempt)
        raise Interrupt("out")

    async with receiver:
        await _running(receiver, driver, "c", 4)
        await eventually(lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 4, within=10)
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10)
        assert receiver.health()["healthy"]
    assert sorted(runs.items) == [1, 1, 1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("batch", [he.Batch(max_size=10, max_wait=0.01), None])
async def test_a_sync_handler_raising_generator_exit_fails_its_events(
    batch: he.Batch | None,
) -> None:
    """A plain-def handler (batch or single) raising GeneratorExit: each event fails,
    is retried, then dead-lettered. Before, asyncio threw it into the awaiting task, which
    closed the coroutines on the way instead of reaching their except: a batch was given
    back and handled again at once, without end; single events stayed unsettled."""
    driver = he.connect(_url())
    runs = Collector()

    def slow(call: Any) -> Any:
        async def publish(publication: Any) -> None:
            await asyncio.sleep(0.001)  # a real broker's round trip: the retry suspends
            await call(publication)

        return publish

    receiver = driver.receiver("svc", publish_middlewares=[slow])

    def handle(ctx: he.Context, msgs: Any) -> None:
        for m in msgs if batch is not None else [msgs]:
            runs.add(m.attempt)
        raise GeneratorExit("out")

    receiver.subscribe("c", action="a", retry=FAST, batch=batch, handler=handle)
    async with receiver:
        await _running(receiver, driver, "c", 3)
        await eventually(lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 3, within=10)
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10)
    assert sorted(runs.items) == [1, 1, 1, 2, 2, 2]


async def test_batch_failed_naming_no_message_fails_the_whole_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = he.connect(_url())
    runs = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="a", retry=FAST, batch=he.Batch(max_size=10, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        for m in msgs:
            runs.add(m.attempt)
        if msgs[0].attempt == 1:
            raise he.BatchFailed({len(msgs): ValueError("off by one")})

    async with receiver:
        await _running(receiver, driver, "c", 3)
        await runs.wait_for(6, within=10)
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10)
    assert sorted(runs.items) == [1, 1, 1, 2, 2, 2]
    assert "which is no index" in caplog.text


class _Unfinished(he.BatchFailed):
    def __init__(self, bad: list[int]) -> None:  # does not call BatchFailed.__init__
        self.bad = bad


async def test_a_batch_failed_without_failures_fails_the_whole_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, a BatchFailed subclass that skipped BatchFailed.__init__ raised out of the
    batch: given back and handled again at once, without end, never dead-lettered."""
    driver = he.connect(_url())
    runs = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="a", retry=FAST, batch=he.Batch(max_size=10, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        for m in msgs:
            runs.add(m.attempt)
        raise _Unfinished([0])

    async with receiver:
        await _running(receiver, driver, "c", 3)
        await eventually(lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 3, within=10)
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10)
    assert sorted(runs.items) == [1, 1, 1, 2, 2, 2]
    assert "_Unfinished carries no mapping" in caplog.text


async def test_in_place_retry_reruns_the_item_alone() -> None:
    driver = he.connect(_url())
    batches = Collector()
    receiver = driver.receiver("svc")
    policy = he.RetryPolicy(max_retries=2, initial_delay=0.01, in_place=True)

    @receiver.subscribe("c", action="a", retry=policy, batch=he.Batch(max_size=10, max_wait=0.05))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        batches.add([(m.payload["i"], m.attempt) for m in msgs])
        failing = {n: ValueError("x") for n, m in enumerate(msgs) if m.payload["i"] == 1}
        if failing and msgs[0].attempt < 3:
            raise he.BatchFailed(failing)  # type: ignore[arg-type]

    async with receiver:
        await receiver.start()
        await driver.emitter().emit_many(he.Event("c", f"k{i}", {"i": i}) for i in range(3))
        await eventually(lambda: [(1, 3)] in batches.items, within=10, what="the re-runs")
        await eventually(lambda: receiver.health()["actions"]["a"]["in_flight"] == 0, within=10)
    assert [(1, 2)] in batches.items
    assert receiver.health()["actions"]["a"]["handled"] == 3


async def test_receiver_middlewares_do_not_wrap_batch_handlers() -> None:
    driver = he.connect(_url())
    wrapped: list[str] = []

    def middleware(handler: he.Handler) -> he.Handler:
        async def run(ctx: he.Context, msg: he.Message[Any]) -> None:
            wrapped.append(msg.id)
            await handler(ctx, msg)

        return run

    got = Collector()
    receiver = driver.receiver("svc", middlewares=[middleware])
    receiver.subscribe(
        "c", action="a", batch=he.Batch(max_size=5, max_wait=0.01), handler=_collect(got)
    )
    async with receiver:
        await _running(receiver, driver, "c", 3)
        await got.wait_for(3, within=10)
    assert wrapped == []


def _collect(got: Collector) -> Any:
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        assert ctx.handler_action == "a"
        for m in msgs:
            got.add(m.id)

    return handle


async def test_a_busy_key_does_not_starve_the_others() -> None:
    """A key with more queued than a batch holds goes behind the other keys' queues. Before,
    it kept its place: with one batch at a time, another key's event waited for every event
    of the busy key, even those that came after it (without bound under steady load)."""
    driver = he.connect(_url())
    gate = asyncio.Event()
    batches = Collector()
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="a", batch=he.Batch(max_size=5, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        batches.add([m.key for m in msgs])
        await gate.wait()

    def in_flight() -> int:
        return int(receiver.health()["actions"]["a"]["in_flight"])

    async with receiver:
        emitter = driver.emitter()
        await emitter.emit(he.Event("c", "first", {}))
        await batches.wait_for(1, within=10)  # running, held at the gate
        await emitter.emit_many(he.Event("c", "hot", {"n": n}) for n in range(30))
        await eventually(lambda: in_flight() == 31, within=10, what="the hot key queued")
        await emitter.emit(he.Event("c", "cold", {}))
        await eventually(lambda: in_flight() == 32, within=10, what="the cold key queued")
        gate.set()
        await eventually(lambda: in_flight() == 0, within=10, what="everything handled")
    order = [key for batch in batches.items[1:] for key in batch]
    assert len(order) == 31
    assert order.index("cold") < 10, batches.items  # in the second batch after the gate


async def test_a_batch_cut_by_the_drain_timeout_is_given_back_whole() -> None:
    url = _url()
    driver = he.connect(url)
    entered = asyncio.Event()
    receiver = driver.receiver("svc", drain_timeout=0.05)

    @receiver.subscribe("c", action="a", batch=he.Batch(max_size=10, max_wait=0.01))
    async def stuck(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        entered.set()
        await asyncio.Event().wait()

    ids = await _running(receiver, driver, "c", 4)
    await asyncio.wait_for(entered.wait(), 10)
    await receiver.close()
    assert receiver.health()["actions"]["a"]["handled"] == 0

    got = Collector()
    again = driver.receiver("svc-again")
    again.subscribe(
        "c", action="a", batch=he.Batch(max_size=10, max_wait=0.01), handler=_collect(got)
    )
    async with again:
        assert sorted(await got.wait_for(4, within=10)) == sorted(ids)


async def test_a_hanging_batch_shows_as_a_stall_and_clears() -> None:
    driver = he.connect(_url())
    entered, release = asyncio.Event(), asyncio.Event()
    got = Collector()
    receiver = driver.receiver("svc", stall_timeout=0.2)

    @receiver.subscribe("c", action="a", batch=he.Batch(max_size=10, max_wait=0.01))
    async def hang(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        entered.set()
        await release.wait()
        for m in msgs:
            got.add(m.id)

    async with receiver:
        await _running(receiver, driver, "c", 3)
        await asyncio.wait_for(entered.wait(), 10)
        await eventually(lambda: receiver.health()["actions"]["a"]["stalled"], within=10)
        assert not receiver.health()["healthy"]
        assert receiver.health()["actions"]["a"]["alive"]
        release.set()
        await got.wait_for(3, within=10)
        await eventually(lambda: receiver.health()["healthy"], within=10, what="healthy again")


# -- the per-message context: built only for a failing message ------------------------------


async def test_a_failing_message_is_logged_with_its_own_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batch handler gets the batch's context; a failing message's own (its correlation id)
    is built when it fails, for the log line and the retry."""
    driver = he.connect(_url())
    receiver = driver.receiver("svc")

    @receiver.subscribe("c", action="a", retry=FAST, batch=he.Batch(max_size=10, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        failing = {n: ValueError("no") for n, m in enumerate(msgs) if m.payload["i"] == 1}
        if failing:
            raise he.BatchFailed(failing)  # type: ignore[arg-type]

    async with receiver:
        await receiver.start()
        emitter = driver.emitter()
        for i in range(3):
            ctx = he.Context(correlation_id=f"corr-{i}")
            await emitter.emit(he.Event("c", f"k{i}", {"i": i}), ctx=ctx)
        await eventually(lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 1, within=10)
    failed = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failed) == 2, failed  # the first run and its retry
    assert all("correlation_id=corr-1 " in line and "action=a " in line for line in failed)


async def test_each_batch_has_a_context_of_its_own() -> None:
    """Before, every batch of a receiver got the same context object: what a handler emitted
    with ``ctx=ctx`` carried one correlation id for the life of the process."""
    driver = he.connect(_url())
    seen: list[he.Context] = []
    receiver = driver.receiver("svc")
    policy = he.RetryPolicy(max_retries=1, initial_delay=0.01, in_place=True)

    @receiver.subscribe("c", action="a", retry=policy, batch=he.Batch(max_size=10, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        seen.append(ctx)
        if msgs[0].payload["i"] == 2 and msgs[0].attempt == 1:
            raise ValueError("once")  # re-run in place, as a batch of one

    async with receiver:
        emitter = driver.emitter()
        for i in range(3):
            await emitter.emit(he.Event("c", "k", {"i": i}))
            await eventually(lambda i=i: len(seen) >= i + 1, within=10, what=f"batch {i}")
        await eventually(lambda: len(seen) == 4, within=10, what="the in-place re-run")
    assert all(ctx.handler_action == "a" for ctx in seen)
    assert len({ctx.correlation_id for ctx in seen}) == 4


class _Counting(CompositePropagator):
    """A propagator other than the default: its extract runs for every message."""

    def __init__(self) -> None:
        super().__init__(he.default_propagator())
        self.extracted: list[str] = []

    def extract(self, headers: Any, ctx: he.Context) -> he.Context:
        ctx = super().extract(headers, ctx)
        self.extracted.append(ctx.correlation_id)
        return ctx


async def test_another_propagator_extracts_every_message_and_names_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    propagator = _Counting()
    driver = he.connect(_url())
    receiver = driver.receiver("svc", propagator=propagator)

    @receiver.subscribe("c", action="a", retry=FAST, batch=he.Batch(max_size=10, max_wait=0.01))
    async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
        failing = {n: ValueError("no") for n, m in enumerate(msgs) if m.payload["i"] == 2}
        if failing:
            raise he.BatchFailed(failing)  # type: ignore[arg-type]

    async with receiver:
        await receiver.start()
        emitter = driver.emitter()
        for i in range(3):
            await emitter.emit(he.Event("c", f"k{i}", {"i": i}), ctx=he.Context(f"id-{i}"))
        await eventually(lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 1, within=10)
    assert sorted(propagator.extracted) == ["id-0", "id-1", "id-2", "id-2"]
    failed = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failed) == 2, failed
    assert all("correlation_id=id-2 " in line for line in failed), failed


async def test_a_replaced_json_codec_decodes_batch_payloads() -> None:
    """The batch path's direct msgspec decode steps aside for a codec registered over json."""

    class Upper(JsonCodec):
        def decode(self, data: bytes, target: Any) -> Any:
            return {"upper": super().decode(data, target)["s"].upper()}

    builtin = he.get_codec("json")
    he.register_codec(Upper(), replace=True)
    try:
        driver = he.connect(_url())
        got = Collector()
        receiver = driver.receiver("svc")

        @receiver.subscribe("c", action="a", batch=he.Batch(max_size=10, max_wait=0.01))
        async def handle(ctx: he.Context, msgs: list[he.Message[Any]]) -> None:
            for m in msgs:
                got.add(m.payload)

        async with receiver:
            await receiver.start()
            await driver.emitter().emit(he.Event("c", "k", {"s": "abc"}))
            await got.wait_for(1, within=10)
        assert got.items == [{"upper": "ABC"}]
    finally:
        he.register_codec(builtin, replace=True)
