"""OpenTelemetry: the consumer span continues the producer's trace."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import hexa_event as he
from hexa_event.propagation import CompositePropagator
from hexa_event.telemetry import CurrentSpanPropagator, tracing
from hexa_event.testing import Collector


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_consumer_span_is_a_child_of_the_emitting_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("test")
    driver = he.connect(f"memory://{uuid.uuid4().hex}")
    emitter = driver.emitter(
        propagator=CompositePropagator(he.default_propagator(), CurrentSpanPropagator())
    )
    done = Collector()
    receiver = driver.receiver("svc", middlewares=[tracing(provider)])

    @receiver.subscribe("orders", action="billing")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        done.add(trace.get_current_span().get_span_context().trace_id)
        if msg.payload["fail"]:
            raise RuntimeError("traced failure")

    async with receiver:
        with tracer.start_as_current_span("http request") as request:
            await emitter.emit(he.Event("orders", "k", {"fail": False}))
            await emitter.emit(he.Event("orders", "k2", {"fail": True}))
        await done.wait_for(2, within=5)

    trace_id = request.get_span_context().trace_id
    assert done.items[:2] == [trace_id, trace_id]
    consumer = [s for s in exporter.get_finished_spans() if s.name == "process orders"]
    assert len(consumer) >= 2
    assert all(
        s.parent is not None and s.parent.span_id == request.get_span_context().span_id
        for s in consumer
    )
    assert {s.attributes["messaging.consumer.group.name"] for s in consumer} == {"billing"}
    failed = [s for s in consumer if not s.status.is_ok]
    assert failed
    assert failed[0].events[0].name == "exception"
