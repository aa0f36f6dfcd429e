"""What producers emit (:class:`Event`) and what handlers receive (:class:`Message`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgspec

from .errors import InvalidEventError
from .numbers import shown

T = TypeVar("T")

MAX_SCHEDULE = 366 * 24 * 3600.0
"""The furthest ahead (seconds) an event may be scheduled: a year and a day."""


class Event(msgspec.Struct, Generic[T], frozen=True):
    """An event to emit. ``channel`` and ``key`` are required and non-empty.

    ``key`` orders events: those with one key reach each action in emit order. ``id`` is
    assigned (UUIDv7) when not given; give one to make re-emits recognisable as duplicates.
    ``headers`` are extra application headers; ``codec`` overrides the emitter's codec.

    ``deliver_at`` (an aware datetime) or ``delay`` (seconds from emit) schedules the event:
    no handler runs it before then (see docs/replies-and-schedules.md). Naive datetimes are
    refused; a time in the past means "at once". ``in_reply_to`` is the id of the request
    this event answers (:meth:`~hexa_event.Emitter.reply` sets it).
    """

    channel: str
    key: str
    payload: T
    reply_channel: str = ""
    headers: Mapping[str, str | bytes] = msgspec.field(default_factory=dict)
    id: str | None = None
    codec: str | None = None
    deliver_at: datetime | None = None
    delay: float | None = None
    in_reply_to: str = ""

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
        if not (channel.isascii() and key.isascii() and self.reply_channel.isascii()):
            _check_text("channel", channel)
            _check_text("key", key)
            _check_text("reply_channel", self.reply_channel)
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise InvalidEventError("id", "must be a non-empty string when given")
        if self.headers:
            for name, value in self.headers.items():
                if not isinstance(name, str) or not name:
                    raise InvalidEventError("headers", f"has a bad header name {name!r}")
                if not isinstance(value, str | bytes):
                    raise InvalidEventError("headers", f"value of {name!r} must be str or bytes")
                _check_text("headers", name)
                if isinstance(value, str):
                    _check_text("headers", value, name)
        if self.deliver_at is not None or self.delay is not None:
            _check_schedule(self.deliver_at, self.delay)
        if self.in_reply_to.__class__ is not str:
            raise InvalidEventError("in_reply_to", "must be a string (a request's event id)")

    def due(self, now: float) -> float:
        """Epoch seconds before which no handler may run this event; 0 for "at once"."""
        if self.deliver_at is not None:
            return self.deliver_at.timestamp()
        if self.delay:
            return now + self.delay
        return 0.0

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


def _check_text(field: str, text: str, header: str = "") -> None:
    """Refuse text no broker can carry: a lone surrogate has no UTF-8 form."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        what = f"value of header {header!r}" if header else "text"
        raise InvalidEventError(
            field,
            f"{what} holds a lone surrogate ({text[exc.start]!r} at position {exc.start}), "
            "which has no UTF-8 form: pass real text (bytes decoded with errors='replace', "
            "say) or, for a header value, bytes",
        ) from None


def utf8_text(text: str, errors: str = "backslashreplace") -> str:
    """``text`` (a record's key) as UTF-8 can hold it: Kafka hands a key that is not UTF-8
    over with its bytes as lone surrogates, which a UTF-8 log handler or exporter refuses;
    those bytes show as ``errors`` writes them (``backslashreplace``: ``\\xff``;
    ``replace``: U+FFFD)."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", errors)
    except UnicodeEncodeError:  # a surrogate no byte escapes to
        return text.encode("utf-8", errors).decode("utf-8")


def loggable(text: str) -> str:
    """``text`` for a log line: bytes that are not UTF-8 shown escaped (:func:`utf8_text`)."""
    return utf8_text(text)


def _check_schedule(deliver_at: object, delay: object) -> None:
    if deliver_at is not None and delay is not None:
        raise InvalidEventError(
            "deliver_at", "and delay were both given: give one of them (delay is seconds from now)"
        )
    if delay is not None:
        # Compared, not converted: NaN and infinities fail the comparison, and a 400-digit
        # integer has no float (math.isfinite raised OverflowError on it).
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= MAX_SCHEDULE
        ):
            raise InvalidEventError(
                "delay",
                f"must be a finite number of seconds from 0 to {MAX_SCHEDULE:.0f} (366 days), "
                f"got {shown(delay)}",
            )
        return
    if not isinstance(deliver_at, datetime):
        raise InvalidEventError(
            "deliver_at", f"must be a datetime, got {type(deliver_at).__name__}"
        )
    if deliver_at.tzinfo is None or deliver_at.utcoffset() is None:
        raise InvalidEventError(
            "deliver_at",
            f"is a naive datetime ({deliver_at.isoformat()}): give it a time zone, for example "
            "datetime.now(UTC) + timedelta(minutes=10) or dt.replace(tzinfo=UTC)",
        )
    if deliver_at.timestamp() > time.time() + MAX_SCHEDULE:
        raise InvalidEventError(
            "deliver_at",
            f"is more than 366 days ahead ({deliver_at.isoformat()}): schedule nearer events "
            "and re-schedule from a handler for longer waits",
        )


class Message(msgspec.Struct, Generic[T], frozen=True, gc=False):
    """An event as a handler receives it, payload decoded to the subscribed type.

    Not tracked by the garbage collector (a batch handler's messages live for a whole batch,
    and tracked ones made it collect a third more often): a message holds text, its headers,
    the payload decoded for it and the client's message, none of which refers back to it.
    Reference counting frees it as usual; only a cycle through it (a payload made to point
    back at its message) would never be freed.
    """

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
