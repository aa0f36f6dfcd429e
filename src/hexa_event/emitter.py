"""The emitter: encode events with their context and hand them to the driver."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .codecs import Codec
from .context import Context
from .driver import Driver, RawRecord
from .envelope import EVENT_ID, CloudEvents, Envelope
from .event import Event
from .propagation import Propagator


class Emitter:
    """Emits events through one driver.

    ``emit`` returns the event id only after the driver confirmed the broker has the record
    (raising :class:`~hexa_event.errors.DriverError` otherwise); re-emitting an event with
    the same ``Event.id`` lets consumers recognise the duplicate.
    """

    def __init__(
        self,
        driver: Driver,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        source: str | None = None,
    ) -> None:
        self.driver = driver
        self.envelope = Envelope(
            codec=codec,
            propagator=propagator,
            cloudevents=CloudEvents(source) if source else None,
        )

    def seal(self, event: Event[Any], ctx: Context | None = None) -> RawRecord:
        """The record ``emit`` would send, without sending it (outboxes store this)."""
        return self.envelope.seal(event, ctx)

    async def emit(self, event: Event[Any], ctx: Context | None = None) -> str:
        """Send one event; return its id once the broker has it."""
        record = self.envelope.seal(event, ctx)
        await self.driver.publish((record,))
        return record.headers[EVENT_ID].decode()

    async def emit_many(
        self, events: Iterable[Event[Any]], ctx: Context | None = None
    ) -> list[str]:
        """Send a batch in one driver call; return the ids once the broker has all of them.

        ``ctx`` applies to every event of the batch (one fresh context when None).
        """
        records = self.envelope.seal_many(events, ctx)
        if records:
            await self.driver.publish(records)
        return [record.headers[EVENT_ID].decode() for record in records]
