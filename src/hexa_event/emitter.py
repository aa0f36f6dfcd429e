"""The emitter: encode events with their context and hand them to the driver.

Emit middlewares wrap the whole step (sealing and publishing) the way handler middlewares
wrap a handler: ``EmitMiddleware = (next) -> emit`` where ``emit(events, contexts)`` seals and
publishes a batch and returns the ids. A middleware may look at or replace the events and
their contexts (add headers, a trace context), time the call, or observe its failure.
Below them, the sealed records go through the publish middlewares
(:mod:`hexa_event.publishing`), the pipeline a receiver's retry copies and dead letters take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from .codecs import Codec
from .context import Context
from .driver import Driver, RawRecord, SealedRecords
from .envelope import DELIVER_AT, EVENT_ID, CloudEvents, Envelope
from .errors import (
    ClosedError,
    ConfigurationError,
    InvalidArgumentError,
    NotARequestError,
    RequestTimeoutError,
)
from .event import Event, Message
from .ids import new_event_id
from .numbers import check_number
from .propagation import Propagator
from .publishing import Publication, PublishCall, PublishMiddleware, pipeline
from .replies import ReplyInbox

_MAX_REQUEST_TIMEOUT = 24 * 3600.0

EmitCall = Callable[[Sequence[Event[Any]], Sequence[Context]], Awaitable[list[str]]]
"""Seal and publish ``events`` (``contexts[i]`` belongs to ``events[i]``); return the ids."""
EmitMiddleware = Callable[[EmitCall], EmitCall]


class Emitter:
    """Emits events through one driver.

    ``emit`` returns the event id only after the driver confirmed the broker has the record
    (raising :class:`~hexa_event.errors.DriverError` otherwise); re-emitting an event with
    the same ``Event.id`` lets consumers recognise the duplicate. Reserved header names
    (``HEXA_*``, ``_ctx_*``...) in ``Event.headers`` are refused with InvalidEventError.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        source: str | None = None,
        middlewares: Sequence[EmitMiddleware] = (),
        publish_middlewares: Sequence[PublishMiddleware] = (),
    ) -> None:
        self.driver = driver
        self.envelope = Envelope(
            codec=codec,
            propagator=propagator,
            cloudevents=CloudEvents(source) if source else None,
        )
        call: EmitCall = self._seal_and_publish
        for middleware in reversed(tuple(middlewares)):
            call = middleware(call)
        self._call = call
        self._streams = not middlewares
        """No emit middleware wants the events as a list: ``emit_many`` seals them as they
        come from its iterable (a generator's events are not all held at once)."""
        self._publish: PublishCall | None = (
            pipeline(driver.publish, publish_middlewares) if publish_middlewares else None
        )
        self._replies: ReplyInbox | None = None
        self._closed = False

    def seal(self, event: Event[Any], ctx: Context | None = None) -> RawRecord:
        """The record ``emit`` would send, without sending it (outboxes store this)."""
        return self.envelope.seal(event, ctx)

    async def emit(self, event: Event[Any], ctx: Context | None = None) -> str:
        """Send one event; return its id once the broker has it."""
        self._check_open()
        return (await self._call((event,), (ctx if ctx is not None else Context(),)))[0]

    async def emit_many(
        self,
        events: Iterable[Event[Any]],
        ctx: Context | Sequence[Context] | None = None,
    ) -> list[str]:
        """Send a batch in one driver call; return the ids once the broker has all of them.

        ``ctx`` is one context for the whole batch (one fresh context when None), or one
        context per event.
        """
        self._check_open()
        if self._streams and (ctx is None or isinstance(ctx, Context)):
            ids: list[str] = []
            records = self.envelope.seal_many(
                events, ctx if ctx is not None else Context(), ids=ids
            )
            if records:
                await self._publish_records(records)
            return ids
        batch = events if isinstance(events, Sequence) else list(events)
        if not batch:
            return []
        contexts: Sequence[Context]
        if ctx is None or isinstance(ctx, Context):
            shared = ctx if ctx is not None else Context()
            contexts = [shared] * len(batch)
        else:
            if isinstance(ctx, Mapping | str):
                raise InvalidArgumentError(
                    f"the context must be an he.Context (or one per event), got "
                    f"{type(ctx).__name__}: pass he.Context(correlation_id=..., locale=...)"
                )
            contexts = ctx
            if len(contexts) != len(batch):
                raise ConfigurationError(
                    f"emit_many got {len(batch)} events and {len(contexts)} contexts: pass one "
                    "context for the batch or exactly one per event"
                )
        return await self._call(batch, contexts)

    async def request(
        self,
        event: Event[Any],
        ctx: Context | None = None,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 (the reply wait, part of the API)
        payload: Any = None,
    ) -> Message[Any]:
        """Send ``event`` as a request and return the reply, decoded to ``payload``.

        The event carries this emitter's reply channel (``_reply_channel``, Go's
        ``ReplyChannel``); a handler answers with :meth:`reply`. Raises
        :class:`~hexa_event.errors.RequestTimeoutError` when no reply came within
        ``timeout`` seconds (sending included); a reply that comes later is dropped and
        counted in :attr:`dropped_replies`. The reply channel is opened on the first request
        and removed by :meth:`close`; raises :class:`~hexa_event.errors.DriverError` when its
        reading ended while the request waited (the next request opens a new channel).
        """
        check_number("request timeout", timeout, above=True, maximum=_MAX_REQUEST_TIMEOUT)
        if event.reply_channel:
            raise ConfigurationError(
                "request() sets the event's reply channel itself: leave Event.reply_channel "
                "empty (or use emit() to send to a reply channel of your own)"
            )
        self._check_open()
        ctx = ctx if ctx is not None else Context()
        event_id = event.id or new_event_id()
        replies = self._replies
        if replies is None:
            replies = self._replies = ReplyInbox(self.driver, owner=self)
        future = replies.expect(event_id, ctx.correlation_id, payload)
        deadline = asyncio.timeout(timeout)
        started = time.monotonic()
        try:
            async with deadline:
                channel = await replies.open()
                await self.emit(
                    msgspec.structs.replace(event, id=event_id, reply_channel=channel), ctx
                )
                return await future
        except TimeoutError:
            if not deadline.expired():  # a driver's or a middleware's own: not ours to name
                raise
            raise RequestTimeoutError(
                event.channel, timeout, replies.channel, replies.reading_error(started)
            ) from None
        finally:
            replies.forget(event_id)
            if not future.done():
                future.cancel()
            elif not future.cancelled():  # failed (closed) while the send failed: the caller
                future.exception()  # got the send's error; asyncio must not log this one

    async def reply(
        self,
        ctx: Context,
        msg: Message[Any],
        payload: Any,
        *,
        headers: Mapping[str, str | bytes] | None = None,
        codec: str | None = None,
    ) -> str:
        """Answer the request ``msg`` (from a handler, with its ``ctx``); return the reply's id.

        The reply goes to the request's reply channel with the request's key, correlation id
        and root ids, through this emitter's middlewares like any emit. Replying twice sends
        two replies; the requester takes the first and drops the other. Raises
        :class:`~hexa_event.errors.NotARequestError` when ``msg`` has no reply channel.
        """
        if not msg.reply_channel:
            raise NotARequestError(msg.id, msg.channel)
        raw = msg.headers.get(EVENT_ID)
        request_id = raw.decode("utf-8", "replace") if raw else msg.id
        key = msg.key
        if not key.isascii():  # a key read as raw bytes (Kafka) may hold escaped bytes
            key = key.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        event = Event(
            msg.reply_channel,
            key,
            payload,
            headers=headers or {},
            codec=codec,
            in_reply_to=request_id,
        )
        return await self.emit(event, ctx)

    @property
    def dropped_replies(self) -> int:
        """Replies dropped because no request waited for them (late, unknown, ambiguous)."""
        return self._replies.dropped if self._replies is not None else 0

    @property
    def reply_channel(self) -> str:
        """This emitter's reply channel (empty before the first request; a new one once the
        reading of the last one ended, see docs/replies-and-schedules.md)."""
        return self._replies.channel if self._replies is not None else ""

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(
                "this emitter was closed; make a new one (conn.emitter()) to send events"
            )

    async def close(self) -> None:
        """Remove the reply channel's subscription, if a request opened one, and refuse
        every later emit, request and reply (ClosedError). Idempotent; the driver stays open
        for its other emitters and receivers (close it after)."""
        self._closed = True
        if self._replies is not None:
            await self._replies.close()

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _seal_and_publish(
        self, events: Sequence[Event[Any]], contexts: Sequence[Context]
    ) -> list[str]:
        ids: list[str] = []
        await self._publish_records(self.envelope.seal_each(events, contexts, ids=ids))
        return ids

    async def _publish_records(self, records: list[RawRecord]) -> None:
        if self.driver.features.scheduled_publish:
            records = _scheduled(records)
        if self._publish is None:
            if type(records) is SealedRecords:
                records.driver = self.driver  # straight from the sealer to this driver
            await self.driver.publish(records)
        else:
            await self._publish(Publication(records))


def _scheduled(records: list[RawRecord]) -> list[RawRecord]:
    """Hand a scheduled event's due time to a broker that holds records until due."""
    for n, record in enumerate(records):
        due = record.headers.get(DELIVER_AT)
        if due is not None:
            records[n] = msgspec.structs.replace(record, not_before=int(due) / 1000)
    return records
