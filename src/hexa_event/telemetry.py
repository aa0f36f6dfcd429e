"""OpenTelemetry integration (the ``[otel]`` extra): spans, trace context and metrics.

One :class:`Telemetry` object holds the tracer and the meter (the global providers unless
given) and hands out the pieces:

- :attr:`Telemetry.emit_middleware`: a PRODUCER span ``send <channel>`` per emit call, child
  of the current span (or of the context's ``traceparent`` when no span is current), whose
  trace context is written into every event's context, hence into the ``traceparent`` header.
- :attr:`Telemetry.handler_middleware`: a CONSUMER span ``process <channel>`` per handler run,
  continuing the producer's trace from the ``traceparent`` header; the handler's context
  carries the consumer span, so what it emits (or writes to an outbox) continues the trace.
  When the handler raises, the span stays open until the receiver decided: a ``retry``,
  ``dead-letter`` or ``nack`` span event is added, then the span ends.
- :attr:`Telemetry.publish_middleware`: a publish middleware (:mod:`hexa_event.publishing`)
  that learns those decisions from the retry copies and dead letters the receiver publishes
  through it, each in a PRODUCER span ``send <channel>``, child of the failed run's span.
- :meth:`Telemetry.relay_driver`: a driver whose ``publish`` makes a PRODUCER span
  ``publish <channel>`` per record, child of the trace context stored in the outbox row, for
  :class:`~hexa_event.outbox.OutboxRelay`.
- :meth:`Telemetry.instrument`: a connection whose emitters and receivers have the two
  middlewares, whose receivers are observed for gauges, and whose publishes are measured.

Metrics (OpenTelemetry metrics API; names below, attributes in brackets):

``hexa_event.emitted`` [channel], ``hexa_event.handled`` / ``hexa_event.failed`` [action,
channel], ``hexa_event.retried`` [action, channel, reason = error type],
``hexa_event.dead_lettered`` [action, channel, reason], ``hexa_event.handler.duration`` (s)
[action, channel, outcome], ``hexa_event.payload.size`` (By) [channel], and observed:
``hexa_event.consumer.lag`` [receiver, action, channel] (the receiver's background sample
of the group's lag, see docs/lag.md), ``hexa_event.consumer.lag.age`` (s) and
``hexa_event.consumer.oldest_unsettled_age`` (s),
``hexa_event.consumer.in_flight``, ``hexa_event.poison`` [receiver, action],
``hexa_event.outbox.backlog``, ``hexa_event.outbox.oldest_unsent_age`` (s) [table].
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from .errors import require_extra

try:  # the [otel] extra: without it, say which extra to install
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ModuleNotFoundError as _missing:
    raise require_extra("hexa_event.telemetry", _missing) from None

from .codecs import Codec
from .connect import Connection
from .context import Context
from .driver import Driver, RawRecord, hand_on
from .emitter import EmitCall, EmitMiddleware, Emitter
from .envelope import REPLY_TO
from .event import Event, Message, utf8_text
from .middleware import Handler, Middleware
from .propagation import TRACEPARENT, TRACESTATE, Headers, Propagator
from .publishing import Publication, PublishCall, PublishMiddleware
from .receiver import Receiver

__all__ = [
    "DURATION_BUCKETS",
    "SIZE_BUCKETS",
    "CurrentSpanPropagator",
    "Telemetry",
    "serve_prometheus",
    "tracing",
]

_W3C = TraceContextTextMapPropagator()
_SYSTEM = "hexa_event"
log = logging.getLogger(__name__)


_LOG_FAILURES_EVERY = 60.0


class _Failures:
    """Telemetry's own failures. :meth:`recording` goes around what telemetry does once an
    outcome is settled (a span ending, a count): a tracer, span processor or meter of the
    application's that raises is logged, and the outcome stands (a handler that returned is
    not retried, an accepted emit does not raise, which would make its caller emit a
    duplicate). Logged with the traceback at most once every ``_LOG_FAILURES_EVERY``
    seconds, with the count: a broken processor fails at every event, and a line for each
    flooded the log."""

    def __init__(self) -> None:
        self.count = 0
        self._logged = 0
        self._quiet_until = 0.0

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            self.count += 1
            now = time.monotonic()
            if now < self._quiet_until:
                return
            self._quiet_until = now + _LOG_FAILURES_EVERY
            unlogged, self._logged = self.count - self._logged - 1, self.count
            log.exception(
                "hexa-event telemetry failed (the outcome stands; %d failures so far, %d not "
                "logged: at most one is logged every %gs)",
                self.count,
                unlogged,
                _LOG_FAILURES_EVERY,
            )


REPLIES = "_reply"
"""The ``channel`` label of every reply, and the span name's channel: each requesting emitter
has a reply channel of its own (``_reply.<random>``), and a request may name any, so their
names would add a metric series per requester, without bound."""


def _label(channel: str, reply: bool) -> str:
    return REPLIES if reply or channel.startswith("_reply.") else channel


def _carrier(traceparent: str, tracestate: str = "") -> dict[str, str]:
    carrier = {"traceparent": traceparent} if traceparent else {}
    if traceparent and tracestate:
        carrier["tracestate"] = tracestate
    return carrier


def _parent_of(ctx: Context) -> otel_context.Context | None:
    """The current span's context when one is active, else the event context's trace."""
    if trace.get_current_span().get_span_context().is_valid:
        return None
    if ctx.traceparent:
        return _W3C.extract(_carrier(ctx.traceparent, ctx.tracestate))
    return None


def _traceparent_of(span: trace.Span) -> tuple[str, str]:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", ""), carrier.get("tracestate", "")


class _StatsSource(Protocol):
    async def stats(self) -> Any: ...


def _table_label(relay: object) -> str:
    table = getattr(relay, "table", None)
    name = getattr(table, "fullname", None)
    return name if isinstance(name, str) and name else "hexa_outbox"


DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip
"""Bucket bounds of ``hexa_event.handler.duration``, in seconds (1 ms to 1 min)."""
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""Bucket bounds of ``hexa_event.payload.size``, in bytes (64 B to 4 MiB)."""


class Telemetry:
    """Spans and metrics for emitters, receivers and the outbox relay.

    The histograms advise their bucket bounds (:data:`DURATION_BUCKETS` in seconds,
    :data:`SIZE_BUCKETS` in bytes); an SDK View of yours overrides them.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("hexa_event", tracer_provider=tracer_provider)
        meter = metrics.get_meter("hexa_event", meter_provider=meter_provider)
        self.emitted = meter.create_counter(
            "hexa_event.emitted", unit="{event}", description="Events emitted (broker accepted)"
        )
        self.handled = meter.create_counter(
            "hexa_event.handled", unit="{event}", description="Handler runs that returned"
        )
        self.failed = meter.create_counter(
            "hexa_event.failed", unit="{event}", description="Handler runs that raised"
        )
        self.retried = meter.create_counter(
            "hexa_event.retried", unit="{event}", description="Retries scheduled"
        )
        self.dead_lettered = meter.create_counter(
            "hexa_event.dead_lettered", unit="{event}", description="Dead letters published"
        )
        self.duration = meter.create_histogram(
            "hexa_event.handler.duration",
            unit="s",
            description="Handler run time",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.payload_size = meter.create_histogram(
            "hexa_event.payload.size",
            unit="By",
            description="Published record bodies",
            explicit_bucket_boundaries_advisory=SIZE_BUCKETS,
        )
        self._failures = _Failures()
        self._receivers: weakref.WeakSet[Receiver] = weakref.WeakSet()
        self._outbox: dict[str, tuple[int, float | None]] = {}
        gauges = (
            (
                "hexa_event.consumer.lag",
                self._observe_lag,
                "{event}",
                "The group's records not yet settled, per channel (sampled; when known)",
            ),
            (
                "hexa_event.consumer.lag.age",
                self._observe("lag_age"),
                "s",
                "Age of the lag sample (grows while the broker cannot be asked)",
            ),
            (
                "hexa_event.consumer.oldest_unsettled_age",
                self._observe("oldest_unsettled_age"),
                "s",
                "Age of the oldest delivery fetched and not yet settled",
            ),
            (
                "hexa_event.consumer.in_flight",
                self._observe("in_flight"),
                "{event}",
                "Deliveries fetched and not yet settled",
            ),
            ("hexa_event.outbox.backlog", self._observe_outbox(0), "{row}", "Unsent outbox rows"),
            (
                "hexa_event.outbox.oldest_unsent_age",
                self._observe_outbox(1),
                "s",
                "Age of the oldest unsent outbox row",
            ),
        )
        for name, callback, unit, description in gauges:
            meter.create_observable_gauge(name, [callback], unit=unit, description=description)
        meter.create_observable_counter(
            "hexa_event.poison",
            [self._observe("poison")],
            unit="{event}",
            description="Records dead-lettered as poison (never reached a handler)",
        )
        self._undecided: dict[tuple[str, str, int], tuple[trace.Span, dict[str, str]]] = {}
        """Failed runs' open spans by (action, event id, attempt), until the receiver's
        decision passes :attr:`publish_middleware` (or the loop turns without one)."""
        self.emit_middleware: EmitMiddleware = self._emit_middleware
        self.handler_middleware: Middleware = self._handler_middleware
        self.publish_middleware: PublishMiddleware = self._publish_middleware

    # -- emit ---------------------------------------------------------------------------------

    def _emit_middleware(self, call: EmitCall) -> EmitCall:
        tracer = self.tracer
        emitted = self.emitted

        async def traced(events: Sequence[Event[Any]], contexts: Sequence[Context]) -> list[str]:
            channels = sorted({event.channel for event in events})
            labels = [_label(event.channel, bool(event.in_reply_to)) for event in events]
            named = set(labels)
            name = f"send {labels[0]}" if len(named) == 1 else "send"
            attributes: dict[str, Any] = {
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "messaging.destination.name": ",".join(channels),
            }
            if len(events) > 1:
                attributes["messaging.batch.message_count"] = len(events)
            else:
                attributes["messaging.message.conversation_id"] = contexts[0].correlation_id
            span = tracer.start_span(
                name,
                context=_parent_of(contexts[0]),
                kind=trace.SpanKind.PRODUCER,
                attributes=attributes,
            )
            try:
                with trace.use_span(span):
                    traceparent, tracestate = _traceparent_of(span)
                    traced_contexts = _with_trace(contexts, traceparent, tracestate)
                    ids = await call(events, traced_contexts)
            except BaseException:
                with self._failures.recording():
                    span.end()
                raise
            with self._failures.recording():
                if len(ids) == 1:
                    span.set_attribute("messaging.message.id", ids[0])
                span.end()
                for label in sorted(named):
                    emitted.add(labels.count(label), {"channel": label})
            return ids

        return traced

    # -- handle -------------------------------------------------------------------------------

    def _handler_middleware(self, handler: Handler) -> Handler:
        tracer = self.tracer

        @functools.wraps(handler)
        async def traced(ctx: Context, msg: Message[Any]) -> None:
            parent = (
                _W3C.extract(_carrier(ctx.traceparent, ctx.tracestate)) if ctx.traceparent else None
            )
            span = tracer.start_span(
                f"process {msg.channel}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": _SYSTEM,
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": msg.channel,
                    "messaging.message.id": msg.id,
                    "messaging.consumer.group.name": ctx.handler_action,
                    "messaging.message.conversation_id": ctx.correlation_id,
                    "hexa_event.attempt": msg.attempt,
                    "hexa_event.delivered_from": msg.delivered_from,
                    # (a key that is not UTF-8 made OTLP drop the whole batch of spans it was in)
                    "hexa_event.key": utf8_text(msg.key, "replace"),
                },
            )
            traceparent, tracestate = _traceparent_of(span)
            inner = ctx.with_(traceparent=traceparent, tracestate=tracestate)
            labels = {"action": ctx.handler_action, "channel": msg.channel}
            started = time.perf_counter()
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                await handler(inner, msg)
            except BaseException as exc:
                otel_context.detach(token)
                with (
                    self._failures.recording()
                ):  # the handler's error is what the receiver must see
                    failed = {**labels, "outcome": "failed"}
                    self.duration.record(time.perf_counter() - started, failed)
                    self.failed.add(1, labels)
                    span.record_exception(exc)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                    span.set_attribute("error.type", type(exc).__name__)
                    if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                        self._decided(span, labels, "nack", "cancelled")  # given back unhandled
                    else:
                        key = (ctx.handler_action, msg.id, msg.attempt)
                        self._await_decision(key, span, labels)
                raise
            otel_context.detach(token)
            with self._failures.recording():
                handled = {**labels, "outcome": "handled"}
                self.duration.record(time.perf_counter() - started, handled)
                self.handled.add(1, labels)
                span.end()

        return traced

    def _await_decision(
        self, key: tuple[str, str, int], span: trace.Span, labels: dict[str, str]
    ) -> None:
        """Keep a failed run's span open for the receiver's decision.

        The receiver publishes the retry or dead letter before it awaits anything else, so
        :meth:`_publish_middleware` (first in the pipeline) takes the span before the loop
        turns; when nothing took it by then (no publish middleware of this telemetry on the
        receiver), the span ends without a decision.
        """
        pending = (span, labels)
        earlier = self._undecided.pop(key, None)
        if earlier is not None:  # the same event's run, left undecided: end it first
            earlier[0].end()
        self._undecided[key] = pending
        asyncio.get_running_loop().call_soon(self._undecided_end, key, pending)

    def _undecided_end(
        self, key: tuple[str, str, int], pending: tuple[trace.Span, dict[str, str]]
    ) -> None:
        if self._undecided.get(key) is pending:
            del self._undecided[key]
            pending[0].end()

    def _publish_middleware(self, call: PublishCall) -> PublishCall:
        tracer = self.tracer

        async def traced(publication: Publication) -> None:
            if publication.purpose == "emit":
                await call(publication)
                return
            message = publication.message
            pending = None
            if message is not None:
                key = (publication.action, message.id, message.attempt)
                pending = self._undecided.pop(key, None)
            parent = trace.set_span_in_context(pending[0]) if pending is not None else None
            spans = [
                tracer.start_span(
                    f"send {record.channel}",
                    context=parent if parent is not None else _record_trace(record.headers),
                    kind=trace.SpanKind.PRODUCER,
                    attributes={
                        "messaging.system": _SYSTEM,
                        "messaging.operation.type": "send",
                        "messaging.operation.name": publication.purpose,
                        "messaging.destination.name": record.channel,
                        "messaging.message.id": _header_text(record.headers, "HEXA_EVENT_ID"),
                        "messaging.consumer.group.name": publication.action,
                        "hexa_event.purpose": publication.purpose,
                        "hexa_event.reason": publication.reason,
                        "hexa_event.key": utf8_text(record.key, "replace"),
                    },
                )
                for record in publication.records
            ]
            try:
                await call(publication)
            except BaseException as exc:
                with self._failures.recording():
                    for span in spans:
                        span.record_exception(exc)
                        span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                        span.end()
                    if pending is not None:
                        records = publication.records
                        where = records[0].channel if records else f"the {publication.purpose}"
                        why = (
                            "cancelled"
                            if isinstance(exc, asyncio.CancelledError)
                            else f"could not publish to {where}"
                        )
                        self._decided(*pending, "nack", why)
                raise
            with self._failures.recording():
                for span in spans:
                    span.end()
                if pending is not None:
                    self._decided(*pending, publication.purpose, publication.reason)

        return traced

    def _decided(
        self, span: trace.Span, labels: Mapping[str, str], outcome: str, detail: str
    ) -> None:
        """The receiver's decision about a failed run: a span event, a count, span end."""
        if outcome == "retry":
            span.add_event("retry", {"hexa_event.error.type": detail})
            self.retried.add(1, {**labels, "reason": detail})
        elif outcome == "dead-letter":
            span.add_event("dead-letter", {"hexa_event.dead_letter.reason": detail})
            self.dead_lettered.add(1, {**labels, "reason": detail})
        else:
            span.add_event("nack", {"hexa_event.nack.reason": detail})
        span.end()

    # -- connections, receivers and the relay -------------------------------------------------

    def instrument(self, conn: Driver) -> InstrumentedConnection:
        """``conn`` with telemetry on every emitter and receiver it makes."""
        inner = conn.driver if isinstance(conn, Connection) else conn
        return InstrumentedConnection(inner, self)

    def observe(self, receiver: Receiver) -> Receiver:
        """Report ``receiver``'s lag, oldest unsettled age, in-flight and poison counts."""
        self._receivers.add(receiver)
        return receiver

    def _observe(self, field: str) -> Any:
        def callback(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            out = []
            for receiver in list(self._receivers):
                for action, info in receiver.health()["actions"].items():
                    value = info.get(field)
                    if value is not None:
                        labels = {"receiver": receiver.name, "action": action}
                        out.append(metrics.Observation(value, labels))
            return out

        return callback

    def _observe_lag(self, _options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        out = []
        for receiver in list(self._receivers):
            for action, info in receiver.health()["actions"].items():
                for channel, value in info.get("lag_by_channel", {}).items():
                    labels = {"receiver": receiver.name, "action": action, "channel": channel}
                    out.append(metrics.Observation(value, labels))
        return out

    def _observe_outbox(self, index: int) -> Any:
        def callback(_options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            out = []
            for table, sample in self._outbox.items():
                value = sample[index]
                if value is not None:
                    out.append(metrics.Observation(value, {"table": table}))
                elif index == 1:
                    out.append(metrics.Observation(0.0, {"table": table}))
            return out

        return callback

    async def sample_outbox(self, relay: _StatsSource, table: str | None = None) -> None:
        """Query the relay's backlog and oldest unsent age once, for the outbox gauges
        (labelled ``table``: by default the relay's table, schema-qualified when it has one,
        so several outboxes in one database stay apart)."""
        stats = await relay.stats()
        self._outbox[table or _table_label(relay)] = (int(stats.backlog), stats.oldest_unsent_age)

    async def watch_outbox(
        self, relay: _StatsSource, *, every: float = 15.0, table: str | None = None
    ) -> None:
        """Sample the outbox every ``every`` seconds until cancelled (run it as a task)."""
        from .numbers import check_number

        check_number("watch_outbox(every=...)", every, above=True)  # 0: query without pause
        while True:
            with contextlib.suppress(Exception):
                await self.sample_outbox(relay, table)
            await asyncio.sleep(every)

    def relay_driver(self, driver: Driver) -> Driver:
        """``driver`` with a ``publish <channel>`` span per record, for the outbox relay.

        Each span is the child of the trace context stored in the record (the transaction
        that wrote the row), and replaces it in the published headers, so consumers continue
        the writer's trace through the relay.
        """
        inner = driver.driver if isinstance(driver, Connection) else driver
        return _RelayDriver(inner, self)

    def _measure(self, records: Sequence[RawRecord]) -> None:
        record_size = self.payload_size.record
        for record in records:
            label = _label(record.channel, REPLY_TO in record.headers)
            record_size(len(record.body), {"channel": label})

    async def _publish_traced(self, driver: Driver, records: Sequence[RawRecord]) -> None:
        spans: list[trace.Span] = []
        out: list[RawRecord] = []
        for record in records:
            headers = dict(record.headers)
            raw = headers.get(TRACEPARENT)
            parent = None
            if raw:
                state = headers.get(TRACESTATE, b"").decode("ascii", "replace")
                parent = _W3C.extract(_carrier(raw.decode("ascii", "replace"), state))
            span = self.tracer.start_span(
                f"publish {record.channel}",
                context=parent,
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": _SYSTEM,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "publish",
                    "messaging.destination.name": record.channel,
                    "messaging.message.id": headers.get("HEXA_EVENT_ID", b"").decode(
                        "utf-8", "replace"
                    ),
                    "messaging.message.body.size": len(record.body),
                    "hexa_event.outbox": True,
                },
            )
            traceparent, tracestate = _traceparent_of(span)
            headers[TRACEPARENT] = traceparent.encode()
            if tracestate:
                headers[TRACESTATE] = tracestate.encode()
            spans.append(span)
            out.append(
                RawRecord(
                    channel=record.channel,
                    key=record.key,
                    headers=headers,
                    body=record.body,
                    not_before=record.not_before,
                )
            )
        try:
            await driver.publish(out)
        except BaseException as exc:
            with self._failures.recording():
                for span in spans:
                    span.record_exception(exc)
                    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
                    span.end()
            raise
        with self._failures.recording():  # published: the relay must mark the rows sent
            self._measure(out)
            for span in spans:
                span.end()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _header_text(headers: Mapping[str, bytes], name: str) -> str:
    raw = headers.get(name)
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""


def _record_trace(headers: Mapping[str, bytes]) -> otel_context.Context | None:
    """The trace context a record's ``traceparent`` header names, if any."""
    traceparent = _header_text(headers, TRACEPARENT)
    if not traceparent:
        return None
    return _W3C.extract(_carrier(traceparent, _header_text(headers, TRACESTATE)))


def _with_trace(contexts: Sequence[Context], traceparent: str, tracestate: str) -> list[Context]:
    out: list[Context] = []
    last: Context | None = None
    traced: Context | None = None
    for ctx in contexts:
        if ctx is not last:
            traced = ctx.with_(traceparent=traceparent, tracestate=tracestate)
            last = ctx
        assert traced is not None
        out.append(traced)
    return out


class InstrumentedConnection(Connection):
    """A connection whose emitters and receivers carry the telemetry middlewares (first, so
    outermost: the publish middleware must see a failed run's decision first).

    Its ``publish`` (used by emitters and by receivers for retry copies and dead letters)
    records each body's size in ``hexa_event.payload.size``.
    """

    def __init__(self, driver: Driver, telemetry: Telemetry) -> None:
        super().__init__(driver)
        self.telemetry = telemetry

    async def publish(self, records: Sequence[RawRecord]) -> None:
        hand_on(records, self, self.driver)  # unchanged: an emitter's records keep their checks
        await self.driver.publish(records)
        with self.telemetry._failures.recording():
            self.telemetry._measure(records)

    def emitter(
        self,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        source: str | None = None,
        middlewares: Sequence[EmitMiddleware] = (),
        publish_middlewares: Sequence[PublishMiddleware] = (),
    ) -> Emitter:
        emitter = Emitter(
            self,
            codec=codec,
            propagator=propagator,
            source=source,
            middlewares=(self.telemetry.emit_middleware, *middlewares),
            publish_middlewares=publish_middlewares,
        )
        self._emitters.add(emitter)  # closed by close(), before the driver
        return emitter

    def receiver(
        self,
        name: str,
        *,
        middlewares: Sequence[Middleware] = (),
        propagator: Propagator | None = None,
        drain_timeout: float = 30.0,
        concurrency: int = 64,
        stall_timeout: float = 300.0,
        lag_interval: float = 5.0,
        publish_middlewares: Sequence[PublishMiddleware] = (),
    ) -> Receiver:
        receiver = Receiver(
            self,
            name=name,
            middlewares=(self.telemetry.handler_middleware, *middlewares),
            propagator=propagator,
            drain_timeout=drain_timeout,
            concurrency=concurrency,
            stall_timeout=stall_timeout,
            lag_interval=lag_interval,
            publish_middlewares=(self.telemetry.publish_middleware, *publish_middlewares),
        )
        return self.telemetry.observe(receiver)


class _RelayDriver(Connection):
    def __init__(self, driver: Driver, telemetry: Telemetry) -> None:
        super().__init__(driver)
        self.telemetry = telemetry

    async def publish(self, records: Sequence[RawRecord]) -> None:
        await self.telemetry._publish_traced(self.driver, records)


def tracing(tracer_provider: trace.TracerProvider | None = None) -> Middleware:
    """A handler middleware running each handler in a consumer span (see :class:`Telemetry`)."""
    return Telemetry(tracer_provider=tracer_provider).handler_middleware


class CurrentSpanPropagator:
    """Writes the current span's W3C trace context when the event's context has none.

    Give it to an :class:`~hexa_event.outbox.Outbox` (with the default propagator) so rows
    written inside a traced request carry its trace to the relay and the consumers.
    """

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


def serve_prometheus(port: int = 9464, addr: str = "127.0.0.1") -> metrics.MeterProvider:
    """Start a Prometheus scrape endpoint on ``addr:port`` and return the meter provider
    feeding it; the provider's ``shutdown()`` stops the endpoint too.

    ``addr`` is 127.0.0.1 by default: only the same host can scrape. In a container, or
    wherever Prometheus scrapes from another host, pass ``addr="0.0.0.0"`` (every IPv4
    interface; ``"::"`` for IPv6 too). ``port`` is 1 to 65535. Needs the ``[prometheus]``
    extra (the OpenTelemetry SDK and its Prometheus exporter). Pass the provider to
    :class:`Telemetry` (or set it globally). Raises ConfigurationError for a port out of
    range or one the endpoint cannot listen on (taken, or not allowed).
    """
    from .errors import ConfigurationError, install_hint
    from .numbers import check_number

    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.sdk.metrics import MeterProvider
        from prometheus_client import start_http_server
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"serve_prometheus needs {exc.name!r}: {install_hint('prometheus')}"
        ) from exc
    # 0 would listen on a port nobody is told, a wrong one raised OverflowError.
    check_number("serve_prometheus's port", port, minimum=1, maximum=65535, integer=True)
    reader = PrometheusMetricReader()
    try:
        started = start_http_server(port, addr=addr)
    except OSError as exc:
        reader.shutdown()  # its collector leaves the registry again
        raise ConfigurationError(
            f"serve_prometheus cannot listen on {addr}:{port} ({exc.strerror or exc}): pick "
            "another port, or stop what listens there"
        ) from exc
    server = started[0] if isinstance(started, tuple) else None  # prometheus_client < 0.17

    class Serving(MeterProvider):
        def shutdown(self, timeout_millis: float = 30_000) -> None:
            try:
                super().shutdown(timeout_millis)
            finally:
                if server is not None:
                    server.shutdown()
                    server.server_close()

    return Serving(metric_readers=[reader])
