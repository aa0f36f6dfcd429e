"""OpenTelemetry integration (the ``[otel]`` extra): spans and trace context.

- :func:`tracing` is a middleware that runs each handler in a CONSUMER span whose parent is
  the producer's trace context (``traceparent``/``tracestate`` headers), with the messaging
  attributes of the OpenTelemetry semantic conventions; a raised error is recorded on it.
- :class:`CurrentSpanPropagator` writes the *current* span's trace context on emit when the
  event's context carries none, so emitting inside a traced request links the two.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .context import Context
from .event import Message
from .middleware import Handler, Middleware
from .propagation import TRACEPARENT, TRACESTATE, Headers

_W3C = TraceContextTextMapPropagator()


def tracing(tracer_provider: trace.TracerProvider | None = None) -> Middleware:
    """A middleware that wraps each handler run in a consumer span."""
    tracer = trace.get_tracer("hexa_event", tracer_provider=tracer_provider)

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def traced(ctx: Context, msg: Message[Any]) -> None:
            carrier: dict[str, str] = {}
            if ctx.traceparent:
                carrier["traceparent"] = ctx.traceparent
                if ctx.tracestate:
                    carrier["tracestate"] = ctx.tracestate
            parent = _W3C.extract(carrier)
            with tracer.start_as_current_span(
                f"process {msg.channel}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.operation.type": "process",
                    "messaging.destination.name": msg.channel,
                    "messaging.message.id": msg.id,
                    "messaging.consumer.group.name": ctx.handler_action,
                    "messaging.message.conversation_id": ctx.correlation_id,
                    "hexa_event.attempt": msg.attempt,
                    "hexa_event.delivered_from": msg.delivered_from,
                },
            ):
                await handler(ctx, msg)

        return traced

    return wrap


class CurrentSpanPropagator:
    """Writes the current span's W3C trace context when the event's context has none."""

    def inject(self, ctx: Context, headers: Headers) -> None:
        if ctx.traceparent:
            return
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        if "traceparent" in carrier:
            headers[TRACEPARENT] = carrier["traceparent"].encode()
            if carrier.get("tracestate"):
                headers[TRACESTATE] = carrier["tracestate"].encode()

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        return ctx
