"""Shared by the telemetry tests: in-memory span exporter and metric reader, and the traced
round trip every driver runs (memory in tests/core, Kafka in tests/drivers/kafka)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hexa_event as he
from hexa_event.telemetry import Telemetry
from hexa_event.testing import Collector, eventually


def make_otel() -> Otel:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    return Otel(
        provider,
        exporter,
        reader,
        meters,
        Telemetry(tracer_provider=provider, meter_provider=meters),
    )


@dataclass
class Otel:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    meters: MeterProvider
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
    # The retry copy and the dead letter went through the publish pipeline: each is a
    # producer span, child of the failed run that made it.
    for run, copy_channel, purpose in (
        (failed[0], f"{action}.retry.1", "retry"),
        (failed[1], f"{action}.dlq", "dead-letter"),
    ):
        (sent,) = otel.spans(f"send {copy_channel}")
        assert sent.kind is trace.SpanKind.PRODUCER
        assert sent.parent is not None
        assert sent.parent.span_id == run.context.span_id
        assert sent.attributes is not None
        assert sent.attributes["hexa_event.purpose"] == purpose
        assert sent.attributes["messaging.destination.name"] == copy_channel

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
