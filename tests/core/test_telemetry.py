"""OpenTelemetry: producer and consumer spans of one trace, retries and dead letters as span
events, metrics read back from an in-memory reader, the relay continuing an outbox row's trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hexa_event as he
from hexa_event.telemetry import tracing
from hexa_event.testing import Collector, eventually
from otel_helpers import Otel, make_otel, traced_round_trip


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


async def test_spans_and_metrics_across_the_memory_driver(otel: Otel) -> None:
    await traced_round_trip(otel, f"memory://{uuid.uuid4().hex}")


async def test_receiver_gauges(otel: Otel) -> None:
    conn = otel.telemetry.instrument(he.connect(f"memory://{uuid.uuid4().hex}"))
    receiver = conn.receiver("gauged")
    release = Collector()

    @receiver.subscribe("slow", action="slow-action")
    async def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        await release.wait_for(1, within=30)

    async with receiver:
        await conn.emitter().emit(he.Event("slow", "k", {}))
        await eventually(lambda: receiver.subscriptions["slow-action"].in_flight == 1)
        labels = (("action", "slow-action"), ("receiver", "gauged"))
        assert otel.metric("hexa_event.consumer.in_flight")[labels] == 1
        assert otel.metric("hexa_event.consumer.oldest_unsettled_age")[labels] >= 0
        release.add(True)
    await conn.close()


async def test_a_handler_emitting_continues_the_trace(otel: Otel) -> None:
    conn = otel.telemetry.instrument(he.connect(f"memory://{uuid.uuid4().hex}"))
    emitter = conn.emitter()
    got = Collector()
    receiver = conn.receiver("chain")

    @receiver.subscribe("first", action="forward")
    async def forward(ctx: he.Context, msg: he.Message[Any]) -> None:
        await emitter.emit(he.Event("second", msg.key, msg.payload), ctx)

    receiver.subscribe("second", action="last", handler=lambda c, m: got.add(c.traceparent))
    async with receiver:
        await emitter.emit(he.Event("first", "k", {}))
        await got.wait_for(1, within=30)
    await conn.close()
    first = otel.spans("send first")[0]
    assert got.items[0].split("-")[1] == format(first.context.trace_id, "032x")
    assert len({s.context.trace_id for s in otel.exporter.get_finished_spans()}) == 1


async def test_legacy_tracing_middleware(otel: Otel) -> None:
    conn = he.connect(f"memory://{uuid.uuid4().hex}")
    got = Collector()
    receiver = conn.receiver("svc", middlewares=[tracing(otel.provider)])
    receiver.subscribe("legacy", action="legacy", handler=got.add_message)
    async with receiver:
        await conn.emitter().emit(he.Event("legacy", "k", {}))
        await got.wait_for(1)
    await conn.close()
    assert len(otel.spans("process legacy")) == 1


async def test_outbox_relay_continues_the_writers_trace(otel: Otel, tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from hexa_event.outbox import Outbox, OutboxRelay, migrate_async
    from hexa_event.propagation import CompositePropagator
    from hexa_event.telemetry import CurrentSpanPropagator

    db = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    engine = create_async_engine(db)
    await migrate_async(engine)
    outbox = Outbox(
        propagator=CompositePropagator(he.default_propagator(), CurrentSpanPropagator())
    )
    tracer = otel.provider.get_tracer("test")
    with tracer.start_as_current_span("place order") as writer:
        async with engine.begin() as tx:
            await outbox.emit_async(tx, he.Event("placed", "k", {"n": 1}))
    # A context that already has a trace keeps it (no current span needed).
    other = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    async with engine.begin() as tx:
        event = he.Event("placed", "k", {"n": 2})
        await Outbox().emit_async(tx, event, he.Context(traceparent=other))

    conn = he.connect(f"sqlite:///{tmp_path / 'log.db'}")  # the relay needs a persistent target
    got = Collector()
    receiver = otel.telemetry.instrument(conn).receiver("svc")
    receiver.subscribe("placed", action="ship", handler=got.add_message)
    relay = OutboxRelay(engine, otel.telemetry.relay_driver(conn), poll_interval=0.05)
    async with receiver:
        assert await relay.drain(max_seconds=30) == 2
        await otel.telemetry.sample_outbox(relay)
        await got.wait_for(2, within=30)
    await conn.close()
    assert otel.metric("hexa_event.outbox.backlog")[(("table", "hexa_outbox"),)] == 0
    await relay.close()
    await engine.dispose()

    publishes = otel.spans("publish placed")
    assert len(publishes) == 2
    by_trace = {s.context.trace_id: s for s in publishes}
    writer_trace = writer.get_span_context().trace_id
    assert by_trace[writer_trace].parent.span_id == writer.get_span_context().span_id
    assert int("ab" * 16, 16) in by_trace
    consumers = otel.spans("process placed")
    assert {s.parent.span_id for s in consumers} == {s.context.span_id for s in publishes}


async def test_prometheus_endpoint() -> None:
    import asyncio
    import socket
    import urllib.request

    from hexa_event.telemetry import Telemetry, serve_prometheus

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    meters = serve_prometheus(port)
    conn = Telemetry(meter_provider=meters).instrument(he.connect(f"memory://{uuid.uuid4().hex}"))
    await conn.emitter().emit(he.Event("scraped", "k", {"n": 1}))

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            return str(page.read().decode())

    text = await asyncio.to_thread(scrape)
    meters.shutdown()
    assert 'hexa_event_emitted_total{channel="scraped"' in text


async def test_a_copy_that_cannot_be_published_ends_the_run_with_a_nack(otel: Otel) -> None:
    refused: list[he.Publication] = []

    def refuse_first_retry(call: he.PublishCall) -> he.PublishCall:
        async def publish(publication: he.Publication) -> None:
            if publication.purpose == "retry" and not refused:
                refused.append(publication)
                raise ConnectionError("broker gone")
            await call(publication)

        return publish

    conn = otel.telemetry.instrument(he.connect(f"memory://{uuid.uuid4().hex}"))
    receiver = conn.receiver("svc", publish_middlewares=[refuse_first_retry])
    runs = Collector()

    @receiver.subscribe("flaky", action="nacked", retry=he.RetryPolicy(initial_delay=0.01))
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        runs.add(msg.attempt)
        if msg.attempt == 1:
            raise RuntimeError("fails once")

    async with receiver:
        await conn.emitter().emit(he.Event("flaky", "k", {}))
        await runs.wait_for(3, within=30)  # given back, run again, then the retry copy
        await eventually(lambda: len(otel.spans("process flaky")) == 3, what="spans")
    await conn.close()
    assert runs.items == [1, 1, 2]
    first, second = sorted(
        (s for s in otel.spans("process flaky") if not s.status.is_ok), key=lambda s: s.start_time
    )
    assert [e.name for e in first.events] == ["exception", "nack"]
    assert first.events[1].attributes == {
        "hexa_event.nack.reason": "could not publish to nacked.retry.1"
    }
    assert [e.name for e in second.events] == ["exception", "retry"]
    (sent,) = [s for s in otel.spans("send nacked.retry.1") if s.status.is_ok]
    assert sent.parent is not None
    assert sent.parent.span_id == second.context.span_id
    labels = (("action", "nacked"), ("channel", "flaky"))
    assert otel.metric("hexa_event.retried")[(*labels, ("reason", "RuntimeError"))] == 1


async def test_the_handler_middleware_alone_still_ends_failed_spans(otel: Otel) -> None:
    conn = he.connect(f"memory://{uuid.uuid4().hex}")
    receiver = conn.receiver("svc", middlewares=[otel.telemetry.handler_middleware])
    receiver.subscribe("doomed", action="alone", retry=he.NO_RETRIES, handler=_raise_permanent)
    async with receiver:
        await conn.emitter().emit(he.Event("doomed", "k", {}))
        info = receiver.subscriptions["alone"]
        await eventually(lambda: info.counters.dead_lettered == 1, what="the dead letter")
        await eventually(lambda: len(otel.spans("process doomed")) == 1, what="the span's end")
    await conn.close()
    (span,) = otel.spans("process doomed")
    assert [e.name for e in span.events] == ["exception"]  # no publish middleware: no decision
    assert not otel.spans("send alone.dlq")


async def _raise_permanent(ctx: he.Context, msg: he.Message[Any]) -> None:
    raise he.PermanentError("never")
