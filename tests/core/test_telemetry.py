"""OpenTelemetry: producer and consumer spans of one trace, retries and dead letters as span
events, metrics read back from an in-memory reader, the relay continuing an outbox row's trace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hexa_event as he
from hexa_event.telemetry import Telemetry, tracing
from hexa_event.testing import Collector, eventually


@dataclass
class Otel:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    telemetry: Telemetry

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def metric(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """{sorted attributes: value (sum, gauge value, or histogram count)}"""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted(dict(point.attributes or {}).items()))
                        found[key] = getattr(point, "value", None) or getattr(point, "count", 0)
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    yield Otel(
        provider,
        exporter,
        reader,
        Telemetry(tracer_provider=provider, meter_provider=meters),
    )
    meters.shutdown()


async def traced_round_trip(otel: Otel, url: str, **driver_options: Any) -> None:
    """Emit two events inside a request span, one fails once then dead-letters: check it all."""
    suffix = uuid.uuid4().hex[:8]
    channel, action = f"orders-{suffix}", f"billing-{suffix}"
    conn = otel.telemetry.instrument(he.connect(url, **driver_options))
    emitter = conn.emitter()
    done = Collector()
    receiver = conn.receiver("svc")

    @receiver.subscribe(
        channel, action=action, retry=he.RetryPolicy(max_retries=1, initial_delay=0.01)
    )
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        done.add((msg.payload["fail"], trace.get_current_span().get_span_context().trace_id))
        if msg.payload["fail"]:
            raise RuntimeError("traced failure")

    tracer = otel.provider.get_tracer("test")
    try:
        async with receiver:
            with tracer.start_as_current_span("http request") as request:
                await emitter.emit(he.Event(channel, "k", {"fail": False}))
                await emitter.emit(he.Event(channel, "k2", {"fail": True}))
            await done.wait_for(3, within=60)
            info = receiver.subscriptions[action]
            await eventually(
                lambda: info.counters.dead_lettered == 1, within=60, what="the dead letter"
            )
            await eventually(
                lambda: len(otel.spans(f"process {channel}")) == 3, within=10, what="spans"
            )
    finally:
        await conn.close()

    trace_id = request.get_span_context().trace_id
    assert {t for _, t in done.items} == {trace_id}

    producers = otel.spans(f"send {channel}")
    assert len(producers) == 2
    for span in producers:
        assert span.kind is trace.SpanKind.PRODUCER
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
        assert span.attributes is not None
        assert span.attributes["messaging.destination.name"] == channel
    producer_ids = {s.context.span_id for s in producers}

    consumers = otel.spans(f"process {channel}")
    assert all(s.kind is trace.SpanKind.CONSUMER for s in consumers)
    assert all(s.context.trace_id == trace_id for s in consumers)
    # Each consumer span is the child of its event's producer span, across the broker.
    assert all(s.parent is not None and s.parent.span_id in producer_ids for s in consumers)
    assert {s.attributes["messaging.consumer.group.name"] for s in consumers} == {action}

    failed = sorted(
        (s for s in consumers if not s.status.is_ok),
        key=lambda s: s.attributes["hexa_event.attempt"],
    )
    assert len(failed) == 2
    assert [e.name for e in failed[0].events] == ["exception", "retry"]
    assert [e.name for e in failed[1].events] == ["exception", "dead-letter"]
    assert failed[1].events[1].attributes == {"hexa_event.dead_letter.reason": "retries-exhausted"}

    labels = (("action", action), ("channel", channel))
    assert otel.metric("hexa_event.emitted")[(("channel", channel),)] == 2
    assert otel.metric("hexa_event.handled")[labels] == 1
    assert otel.metric("hexa_event.failed")[labels] == 2
    assert otel.metric("hexa_event.retried")[(*labels, ("reason", "RuntimeError"))] == 1
    assert otel.metric("hexa_event.dead_lettered")[(*labels, ("reason", "retries-exhausted"))] == 1
    durations = otel.metric("hexa_event.handler.duration")
    assert durations[(*labels, ("outcome", "handled"))] == 1
    assert durations[(*labels, ("outcome", "failed"))] == 2
    sizes = otel.metric("hexa_event.payload.size")
    assert sizes[(("channel", channel),)] == 2
    assert sizes[(("channel", f"{action}.dlq"),)] == 1


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

    conn = he.connect(f"memory://{uuid.uuid4().hex}")
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
