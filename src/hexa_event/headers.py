"""The header names hexa-event writes and reads, as public constants.

Use these instead of string literals when a foreign consumer, a dashboard or a test looks at
records directly. Go hexa-event's names are kept where it has them.

On every event: :data:`EVENT_ID`, :data:`EVENT_TIME`, :data:`CONTENT_TYPE`,
:data:`PAYLOAD_ENCODER`, :data:`REPLY_CHANNEL` and the context (:data:`CORRELATION_ID`,
:data:`LOCALE`, :data:`USER`, W3C :data:`TRACEPARENT`/:data:`TRACESTATE`/:data:`BAGGAGE`).

On retry copies and dead letters: :data:`ROOT_EVENT_ID`, :data:`ROOT_ACTION`,
:data:`SOURCE_CHANNEL`, :data:`SOURCE_COORDINATES`, :data:`ERROR_TYPE`,
:data:`ERROR_MESSAGE` and :data:`ATTEMPT`: on a retry copy the attempt it is for (2 for the
first retry), on a dead letter the attempts made (the attempt that failed last). Retry copies
carry :data:`RETRY_AT`; dead letters :data:`DEAD_LETTER_REASON`, one of
:data:`REASON_POISON`, :data:`REASON_PERMANENT`, :data:`REASON_EXHAUSTED`. A replayed dead
letter carries :data:`REPLAYED_FROM`. A scheduled event carries :data:`DELIVER_AT`; a reply
:data:`REPLY_TO` (the request's event id).
"""

from __future__ import annotations

from .dispatch import EXHAUSTED as REASON_EXHAUSTED
from .dispatch import PERMANENT as REASON_PERMANENT
from .dispatch import POISON as REASON_POISON
from .envelope import (
    ATTEMPT,
    CE_ID,
    CE_SOURCE,
    CE_SPECVERSION,
    CE_TIME,
    CE_TYPE,
    CONTENT_TYPE,
    DEAD_LETTER_REASON,
    DELIVER_AT,
    ERROR_MESSAGE,
    ERROR_TYPE,
    EVENT_ID,
    EVENT_TIME,
    PAYLOAD_ENCODER,
    REPLY_CHANNEL,
    REPLY_TO,
    RESERVED_PREFIXES,
    RETRY_AT,
    ROOT_ACTION,
    ROOT_EVENT_ID,
    SOURCE_CHANNEL,
    SOURCE_COORDINATES,
)
from .propagation import BAGGAGE, CORRELATION_ID, LOCALE, TRACEPARENT, TRACESTATE, USER
from .wire import REPLAYED_FROM

__all__ = [
    "ATTEMPT",
    "BAGGAGE",
    "CE_ID",
    "CE_SOURCE",
    "CE_SPECVERSION",
    "CE_TIME",
    "CE_TYPE",
    "CONTENT_TYPE",
    "CORRELATION_ID",
    "DEAD_LETTER_REASON",
    "DELIVER_AT",
    "ERROR_MESSAGE",
    "ERROR_TYPE",
    "EVENT_ID",
    "EVENT_TIME",
    "LOCALE",
    "PAYLOAD_ENCODER",
    "REASON_EXHAUSTED",
    "REASON_PERMANENT",
    "REASON_POISON",
    "REPLAYED_FROM",
    "REPLY_CHANNEL",
    "REPLY_TO",
    "RESERVED_PREFIXES",
    "RETRY_AT",
    "ROOT_ACTION",
    "ROOT_EVENT_ID",
    "SOURCE_CHANNEL",
    "SOURCE_COORDINATES",
    "TRACEPARENT",
    "TRACESTATE",
    "USER",
]
