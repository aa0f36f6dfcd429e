"""The emitter: encode events with their context and hand them to the driver.

Emit middlewares wrap the whole step (sealing and publishing) the way handler middlewares
wrap a handler: ``EmitMiddleware = (next) -> emit`` where ``emit(events, contexts)`` seals and
publishes a batch and returns the ids. A middleware may look at or replace the events and
their contexts (add headers, a trace context), time the call, or observe its failure.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from .codecs import Codec
from .context import Context
from .driver import Driver, RawRecord
from .envelope import EVENT_ID, CloudEvents, Envelope
from .errors import ConfigurationError, InvalidArgumentError
from .event import Event
from .propagation import Propagator

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

    def seal(self, event: Event[Any], ctx: Context | None = None) -> RawRecord:
        """The record ``emit`` would send, without sending it (outboxes store this)."""
        return self.envelope.seal(event, ctx)

    async def emit(self, event: Event[Any], ctx: Context | None = None) -> str:
        """Send one event; return its id once the broker has it."""
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

    async def _seal_and_publish(
        self, events: Sequence[Event[Any]], contexts: Sequence[Context]
    ) -> list[str]:
        records = self.envelope.seal_each(events, contexts)
        await self.driver.publish(records)
        return [record.headers[EVENT_ID].decode() for record in records]
