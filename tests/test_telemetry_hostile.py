"""Telemetry against what others control: the reply channel a requester names, a tracer or
a meter that raises. Metrics keep a bounded set of series; telemetry never changes what
happens to an event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

import hexa_event as he
from hexa_event.telemetry import Telemetry
from hexa_event.testing import Collector, eventually
from otel_helpers import Otel, make_otel


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


async def test_replies_share_one_channel_label(otel: Otel) -> None:
    """Every requesting emitter has its own reply channel (``_reply.<random>``), and a
    request may name any reply channel: labelled by it, a responder's
    ``hexa_event.emitted`` and ``hexa_event.payload.size`` grew one series per requester,
    without bound. Replies are labelled ``_reply``; the span keeps the real channel."""
    url = f"memory://telemetry-{uuid.uuid4().hex}"
    served = otel.telemetry.instrument(he.connect(url))
    responder = served.emitter()
    receiver = served.receiver("svc")

    @receiver.subscribe("prices", action="quote")
    async def quote(ctx: he.Context, msg: he.Message[Any]) -> None:
        await responder.reply(ctx, msg, {"price": 1})

    clients = he.connect(url)
    async with receiver:
        for _ in range(3):  # three requesting processes, say
            requester = clients.emitter()
            reply = await requester.request(he.Event("prices", "k", {}), timeout=20)
            assert reply.payload == {"price": 1}
            await requester.close()
        request = he.Event("prices", "k", {}, reply_channel="chosen-by-the-requester")
        await clients.emitter().emit(request)  # a foreign requester names its own
        await _until(lambda: otel.metric("hexa_event.handled").get(_QUOTE) == 4)
    await clients.close()
    await served.close()

    emitted = otel.metric("hexa_event.emitted")
    assert emitted == {(("channel", "_reply"),): 4}, emitted
    sizes = otel.metric("hexa_event.payload.size")
    assert set(sizes) == {(("channel", "_reply"),)}, sizes
    spans = otel.spans("send _reply")
    assert len(spans) == 4
    destinations = {s.attributes["messaging.destination.name"] for s in spans if s.attributes}
    assert len(destinations) == 4  # the span still says where each reply went


_QUOTE = (("action", "quote"), ("channel", "prices"))


async def _until(condition: Any) -> None:
    await eventually(condition, within=20, what="the handled count")


class _Broken(SpanProcessor):
    """A span processor of the application's that raises when a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("exporter bug")


async def test_a_tracer_that_raises_changes_no_outcome(caplog: pytest.LogCaptureFixture) -> None:
    """A span processor raising in ``on_end`` made a successful handler look failed (the
    event was retried: the handler ran twice) and an accepted emit raise (a caller retrying
    it emits a duplicate). Telemetry's failures are logged; the outcomes stand."""
    provider = TracerProvider()
    provider.add_span_processor(_Broken())
    telemetry = Telemetry(tracer_provider=provider)
    url = f"memory://telemetry-{uuid.uuid4().hex}"
    conn = telemetry.instrument(he.connect(url))
    plain = he.connect(url)
    runs = Collector()
    receiver = conn.receiver("svc")
    receiver.subscribe(
        "orders",
        action="charge",
        retry=he.RetryPolicy(max_retries=2, initial_delay=0.01),
        handler=lambda ctx, msg: runs.add((msg.key, msg.attempt)),
    )
    async with receiver:
        await plain.emitter().emit(he.Event("orders", "a", {}))  # the handler's span fails
        await conn.emitter().emit(he.Event("orders", "b", {}))  # the emit's span too
        info = receiver.subscriptions["charge"]
        await eventually(lambda: info.counters.handled == 2, within=20, what="handled")
    await conn.close()
    await plain.close()
    assert sorted(runs.items) == [("a", 1), ("b", 1)]  # each once: not retried
    assert info.counters.retried == info.counters.failed == 0
    assert "exporter bug" in caplog.text  # said, not swallowed


@pytest.mark.parametrize("every", [0, -1, float("nan"), float("inf")])
async def test_watch_outbox_refuses_a_period_that_is_no_pause(every: float) -> None:
    """``every=0`` (or negative, or NaN) queried the outbox table back to back, forever."""
    sampled = Collector()

    class Relay:
        async def stats(self) -> Any:
            sampled.add(1)
            raise RuntimeError("no database here")

    with pytest.raises(he.ConfigurationError, match="every"):
        await asyncio.wait_for(Telemetry().watch_outbox(Relay(), every=every), timeout=5)
    assert not sampled.items


async def test_a_key_that_is_not_utf8_leaves_spans_exportable(otel: Otel) -> None:
    """Kafka hands a key that is not UTF-8 over as lone surrogates; the consumer span's
    ``hexa_event.key`` carried them, and OTLP's protobuf encoding of that span raised,
    dropping every span exported in the same batch."""
    handled = Collector()

    async def handler(ctx: he.Context, msg: he.Message[Any]) -> None:
        handled.add(msg.key)

    traced = otel.telemetry.handler_middleware(handler)
    msg: he.Message[Any] = he.Message(
        id="e-1", channel="orders", key="k\udcff", payload={}, headers={}, attempt=1,
        timestamp=None,
    )  # fmt: skip
    await traced(he.Context(correlation_id="c", handler_action="charge"), msg)
    assert handled.items == ["k\udcff"]  # the handler still sees the key as read
    (span,) = otel.spans("process orders")
    assert span.attributes is not None
    assert span.attributes["hexa_event.key"] == "k\ufffd"
    for value in span.attributes.values():
        if isinstance(value, str):
            value.encode("utf-8")  # what an exporter does
