"""What producers emit (:class:`Event`) and what handlers receive (:class:`Message`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from .errors import InvalidEventError

T = TypeVar("T")


class Event(msgspec.Struct, Generic[T], frozen=True):
    """An event to emit. ``channel`` and ``key`` are required and non-empty.

    ``key`` orders events: those with one key reach each action in emit order. ``id`` is
    assigned (UUIDv7) when not given; give one to make re-emits recognisable as duplicates.
    ``headers`` are extra application headers; ``codec`` overrides the emitter's codec.
    """

    channel: str
    key: str
    payload: T
    reply_channel: str = ""
    headers: Mapping[str, str | bytes] = msgspec.field(default_factory=dict)
    id: str | None = None
    codec: str | None = None

    def __post_init__(self) -> None:
        channel, key = self.channel, self.key
        if (
            channel.__class__ is not str
            or not channel
            or key.__class__ is not str
            or not key
            or self.reply_channel.__class__ is not str
        ):
            self._refuse()
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise InvalidEventError("id", "must be a non-empty string when given")
        if self.headers:
            for name, value in self.headers.items():
                if not isinstance(name, str) or not name:
                    raise InvalidEventError("headers", f"has a bad header name {name!r}")
                if not isinstance(value, str | bytes):
                    raise InvalidEventError("headers", f"value of {name!r} must be str or bytes")

    def _refuse(self) -> None:
        """Raise for the first of channel, key and reply_channel that is wrong."""
        for name in ("channel", "key"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidEventError(name, f"must be a string, got {type(value).__name__}")
            if not value:
                raise InvalidEventError(name, "is required and must not be empty")
        if not isinstance(self.reply_channel, str):
            raise InvalidEventError("reply_channel", "must be a string")


class Message(msgspec.Struct, Generic[T], frozen=True):
    """An event as a handler receives it, payload decoded to the subscribed type."""

    id: str
    """The producer's event id (HEXA_EVENT_ID), or the broker coordinates for foreign ones."""
    channel: str
    """The channel the event was emitted to (also for retry copies)."""
    key: str
    payload: T
    headers: Mapping[str, bytes]
    attempt: int
    """1 for the first run of this action's handler, 2 for the first retry, and so on."""
    timestamp: datetime | None
    """When the producer emitted it (or the broker's time for foreign records)."""
    reply_channel: str = ""
    codec: str = "json"
    delivered_from: str = ""
    """The channel this copy was read from: ``channel`` or a retry channel."""
    native: Any = None
    """The broker client's own message (an escape hatch)."""
