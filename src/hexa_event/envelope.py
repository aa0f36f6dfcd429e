"""The wire envelope: Event + Context -> headers + body (reading them back is :mod:`.wire`).

The body is the encoded payload alone, so consumers that know nothing of hexa-event can read
it. Metadata goes in broker-native headers; the names of Go hexa-event are kept, and ours are
``HEXA_*`` upper-case like its dedup keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from uuid_utils import uuid7

from .codecs import Codec, get_codec, resolve_codec
from .context import (
    HEXA_EVENT_ID,
    HEXA_ROOT_EVENT_HANDLER_ACTION_NAME,
    HEXA_ROOT_EVENT_ID,
    Context,
)
from .driver import RawRecord, SealedRecords
from .errors import EncodeError, InvalidArgumentError, InvalidEventError
from .event import Event
from .propagation import Propagator, default_propagator

# Go hexa-event's own headers.
PAYLOAD_ENCODER = "_payload_encoder"
REPLY_CHANNEL = "_reply_channel"
ROOT_EVENT_ID = HEXA_ROOT_EVENT_ID
ROOT_ACTION = HEXA_ROOT_EVENT_HANDLER_ACTION_NAME
# Ours.
EVENT_ID = HEXA_EVENT_ID
EVENT_TIME = "HEXA_EVENT_TIME"
"""Milliseconds since the epoch when the event was emitted, decimal text."""
CONTENT_TYPE = "content-type"
ATTEMPT = "HEXA_ATTEMPT"
"""On retry copies: the attempt the copy is for (2 for the first retry)."""
RETRY_AT = "HEXA_RETRY_AT"
"""On retry copies: epoch milliseconds before which the handler must not run."""
SOURCE_CHANNEL = "HEXA_SOURCE_CHANNEL"
"""On retry and dead-letter copies: the channel the event was emitted to."""
ERROR_TYPE = "HEXA_ERROR_TYPE"
ERROR_MESSAGE = "HEXA_ERROR_MESSAGE"
DEAD_LETTER_REASON = "HEXA_DEAD_LETTER_REASON"
"""``retries-exhausted``, ``permanent-error`` or ``poison``."""
SOURCE_COORDINATES = "HEXA_SOURCE_COORDINATES"
"""On copies: where the broker held the copied record (e.g. ``orders-2-1532``)."""
DELIVER_AT = "HEXA_DELIVER_AT"
"""On scheduled events: epoch milliseconds before which no handler may run the event."""
REPLY_TO = "HEXA_REPLY_TO"
"""On replies: the event id of the request answered (Go replies carry the correlation id
alone, which the requester matches as a fallback)."""
# CloudEvents binary mode (Kafka protocol binding names).
CE_ID, CE_TYPE, CE_SOURCE, CE_SPECVERSION, CE_TIME = (
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_specversion",
    "ce_time",
)

RESERVED_PREFIXES = ("HEXA_", "_ctx_", "_payload_encoder", "_reply_channel")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_clock = time.time


@dataclass(frozen=True, slots=True)
class CloudEvents:
    """Adds CloudEvents binary-mode headers; ``ce_type`` is the payload's type name."""

    source: str


class Envelope:
    """Seals events into raw records; the emitter and the outbox share it."""

    def __init__(
        self,
        *,
        codec: str | Codec = "json",
        propagator: Propagator | None = None,
        cloudevents: CloudEvents | None = None,
    ) -> None:
        self.codec = resolve_codec(codec)
        self.propagator = propagator or default_propagator()
        self.cloudevents = cloudevents

    def seal(self, event: Event[Any], ctx: Context | None = None) -> RawRecord:
        """Encode ``event`` with ``ctx`` (a fresh one when None) into the record to send."""
        return _Sealer(self, self.context_headers(ctx), ctx).seal(event)

    def seal_many(
        self,
        events: Iterable[Event[Any]],
        ctx: Context | None = None,
        *,
        ids: list[str] | None = None,
    ) -> list[RawRecord]:
        """Seal a batch that shares one context (a fresh one for the batch when None);
        append each record's event id to ``ids`` when given. The list is a
        :class:`~hexa_event.driver.SealedRecords` when every header is known text and
        bytes."""
        sealer = _Sealer(self, self.context_headers(ctx), ctx, ids)
        records = SealedRecords(map(sealer.seal, events))
        records.text = sealer.text
        return records if sealer.clean else list(records)

    def seal_each(
        self,
        events: Sequence[Event[Any]],
        contexts: Sequence[Context],
        *,
        ids: list[str] | None = None,
    ) -> list[RawRecord]:
        """Seal ``events[i]`` with ``contexts[i]``; a context shared by neighbours is
        propagated once. Each record's event id is appended to ``ids`` when given; the list
        is a :class:`~hexa_event.driver.SealedRecords` as for :meth:`seal_many`."""
        out = SealedRecords()
        last: Context | None = None
        sealer = None
        clean = text = True
        for event, ctx in zip(events, contexts, strict=True):
            if ctx is not last or sealer is None:
                if sealer is not None:
                    clean = clean and sealer.clean
                    text = text and sealer.text
                sealer = _Sealer(self, self.context_headers(ctx), ctx, ids)
                last = ctx
            out.append(sealer.seal(event))
        out.text = text and (sealer is None or sealer.text)
        return out if clean and (sealer is None or sealer.clean) else list(out)

    def context_headers(self, ctx: Context | None) -> dict[str, bytes]:
        """What the propagator writes for ``ctx`` (a fresh context when None)."""
        if ctx is not None and not isinstance(ctx, Context):
            raise InvalidArgumentError(
                f"the context must be an he.Context, got {type(ctx).__name__}: pass "
                "he.Context(correlation_id=..., locale=..., user=...) or None for a fresh one"
            )
        headers: dict[str, bytes] = {}
        self.propagator.inject(ctx if ctx is not None else Context(), headers)
        return headers


class _Sealer:
    """Seals events that share one context's headers: the headers every record of a codec
    carries alike are built once, and each record starts from a copy of them.

    ``clean`` stays True while every record sealed passes
    :func:`~hexa_event.driver.check_records` by construction, which the sealer makes sure of
    where it does not know it: every header a text name with a bytes value (the propagator's
    and codec's headers once per template, an event's own headers, a reply's root ids), the
    channel non-empty text without NUL (once per channel object), the key text, the body
    bytes.

    ``text`` stays True while every header value sealed is UTF-8: the sealer encodes its own
    values from text, and looks at the bytes it is given (the propagator's, once per
    template; an event's own header values given as bytes)."""

    __slots__ = (
        "_channel",
        "_codec",
        "_codec_template",
        "_context_headers",
        "_ctx",
        "_envelope",
        "_ids",
        "_ms",
        "_ms_end",
        "_ms_start",
        "_ms_text",
        "_templates",
        "clean",
        "text",
    )

    def __init__(
        self,
        envelope: Envelope,
        context_headers: Mapping[str, bytes],
        ctx: Context | None = None,
        ids: list[str] | None = None,
    ) -> None:
        self._envelope = envelope
        self._ids = ids
        """Where each sealed record's event id goes, if anywhere (the emitter returns them)."""
        self._context_headers = context_headers
        self._ctx = ctx
        self._templates: dict[int, dict[str, bytes]] = {}
        self._codec: Codec | None = None
        """The codec of the last record sealed, and its template (the common case: one)."""
        self._codec_template: dict[str, bytes] = {}
        self._ms = -1
        """The millisecond of the clock last read, its text, and the clock's times (seconds)
        that fall in it: read per record, the clock turns these over once a millisecond."""
        self._ms_text = b""
        self._ms_start = self._ms_end = 0.0
        self._channel: object = None
        """The last channel object seen fit for a broker (checked once, not per record)."""
        cloudevents = envelope.cloudevents
        self.clean = cloudevents is None or cloudevents.source.__class__ is str
        self.text = True

    def _template(self, codec: Codec) -> dict[str, bytes]:
        template = self._templates.get(id(codec))
        if template is None:
            # Placeholders keep the header order of the wire: context, id, time, content
            # type, reply channel, payload encoder.
            template = self._templates[id(codec)] = {
                **self._context_headers,
                EVENT_ID: b"",
                EVENT_TIME: b"",
                CONTENT_TYPE: codec.content_type.encode(),
                REPLY_CHANNEL: b"",
                PAYLOAD_ENCODER: codec.name.encode(),
            }
            if not _clean(template):
                self.clean = False
            if not _utf8(template.values()):
                self.text = False
        self._codec, self._codec_template = codec, template
        return template

    def seal(self, event: Event[Any]) -> RawRecord:
        if not isinstance(event, Event):
            raise InvalidArgumentError(
                f"emit takes an he.Event, got {type(event).__name__}: wrap the payload as "
                "he.Event(channel='orders', key='order-42', payload=...)"
            )
        envelope = self._envelope
        codec = get_codec(event.codec) if event.codec else envelope.codec
        try:
            body = codec.encode(event.payload)
        except EncodeError as exc:
            raise EncodeError(f"event for channel {event.channel!r}: {exc}") from exc
        template = self._codec_template if codec is self._codec else self._template(codec)
        if event.headers:
            headers = {
                _application_header(name): value.encode() if isinstance(value, str) else value
                for name, value in event.headers.items()
            }
            headers.update(template)
            if not _clean(headers):
                self.clean = False
            if self.text and not _utf8(event.headers.values()):
                self.text = False
        else:
            headers = template.copy()
        now = _clock()
        if not self._ms_start <= now < self._ms_end:  # another millisecond (or clock step)
            self._next_ms(now)
        event_id = event.id
        if not event_id:
            event_id = str(uuid7())  # new_event_id(), without a call per record
        elif event_id.__class__ is not str:
            self.clean = False
        headers[EVENT_ID] = event_id.encode()
        headers[EVENT_TIME] = self._ms_text
        if self._ids is not None:
            self._ids.append(event_id)
        if event.reply_channel:
            headers[REPLY_CHANNEL] = event.reply_channel.encode()
        if event.deliver_at is not None or event.delay:
            # Rounded up to the next millisecond, from the clock's exact time: no handler may
            # run the event before deliver_at, or before ``delay`` after the emit call. A due
            # time already past means "at once": no header (one before 1970 was negative,
            # and a broker that holds scheduled records refused it as a not-before time).
            now = time.time()
            due = event.due(now)
            if due > now:
                headers[DELIVER_AT] = str(math.ceil(due * 1000)).encode()
        if event.in_reply_to:
            self._reply_headers(event.in_reply_to, headers)
        if envelope.cloudevents is not None:
            headers[CE_SPECVERSION] = b"1.0"
            headers[CE_ID] = event_id.encode()
            headers[CE_SOURCE] = envelope.cloudevents.source.encode()
            headers[CE_TYPE] = type(event.payload).__name__.encode()
            headers[CE_TIME] = datetime.fromtimestamp(self._ms / 1000, UTC).isoformat().encode()
        channel, key = event.channel, event.key
        if channel is not self._channel:
            if channel.__class__ is str and channel and "\x00" not in channel:
                self._channel = channel
            else:
                self.clean = False  # check_records names what is wrong
        if key.__class__ is not str or body.__class__ is not bytes:
            self.clean = False
        return RawRecord(channel, key, headers, body)

    def _next_ms(self, now: float) -> None:
        """Turn over to the millisecond of ``now`` (seconds since the epoch)."""
        ms = int(now * 1000)
        self._ms, self._ms_text = ms, str(ms).encode()
        self._ms_start, self._ms_end = ms / 1000, (ms + 1) / 1000

    def _reply_headers(self, request_id: str, headers: dict[str, bytes]) -> None:
        """A reply names the request it answers and carries the request's root ids."""
        headers[REPLY_TO] = request_id.encode()
        ctx = self._ctx
        if ctx is not None and ctx.root_event_id:
            headers[ROOT_EVENT_ID] = ctx.root_event_id.encode()
            if ctx.root_handler_action:
                headers[ROOT_ACTION] = ctx.root_handler_action.encode()
            if not _clean(headers):
                self.clean = False


def _clean(headers: Mapping[str, object]) -> bool:
    """Every name text and every value bytes (exactly: what check_records lets through
    without a closer look)."""
    return all(
        name.__class__ is str and value.__class__ is bytes for name, value in headers.items()
    )


def _utf8(values: Iterable[str | bytes]) -> bool:
    """Every bytes value is UTF-8 (text is encoded to it; other types are not clean)."""
    try:
        for value in values:
            if isinstance(value, bytes) and not value.isascii():
                value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _application_header(name: str) -> str:
    if name.startswith(RESERVED_PREFIXES) or name in _RESERVED_NAMES:
        raise InvalidEventError(
            "headers",
            f"uses the reserved name {name!r}: names starting with "
            f"{', '.join(RESERVED_PREFIXES)} (and the content-type and ce_* headers) are "
            "written by hexa-event itself; rename the header",
        )
    return name


_RESERVED_NAMES = frozenset({CONTENT_TYPE, CE_ID, CE_TYPE, CE_SOURCE, CE_SPECVERSION, CE_TIME})
