"""Names on the wire: channel <-> subject, action -> consumer name, record -> message id.

Subjects: channel ``c`` is ``<prefix>.c``. A channel's dots stay token separators (so
``orders.eu`` is ``hexa.orders.eu`` and NATS tools filter it naturally); what NATS forbids in
a subject is escaped as ``%XX`` (UTF-8 bytes, upper-case hex): ``%`` itself, whitespace,
``*``, ``>``, control characters, and a dot that would make an empty token (leading,
trailing or doubled). The mapping is one-to-one, so :func:`subject_channel` inverts it.

Consumer names (JetStream forbids ``.``, ``*``, ``>``, whitespace and slashes) use the same
escaping with ``.`` always escaped: action ``billing.charge`` is consumer
``billing%2Echarge``.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from ...driver import RawRecord

_SUBJECT_UNSAFE = re.compile(r"[%\s*>\x00-\x1f\x7f]")
_NAME_UNSAFE = re.compile(r"[%\s*>.\\/\x00-\x1f\x7f]")

EVENT_ID = "HEXA_EVENT_ID"
_PACK = msgspec.msgpack.Encoder().encode
# Headers that differ between two sealings of one event (the emit time, a generated
# correlation id, the trace context of the emitting span): left out of the content digest.
_VOLATILE = frozenset(
    {"HEXA_EVENT_TIME", "_ctx_correlation_id", "traceparent", "tracestate", "ce_time"}
)


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode())


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        if raw[i] == 0x25 and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789ABCDEFabcdef" for c in pair)


def escape_channel(channel: str) -> str:
    """The subject tokens of ``channel`` (without the prefix)."""
    escaped = _SUBJECT_UNSAFE.sub(_escape, channel)
    if "." not in escaped:
        return escaped
    tokens = escaped.split(".")
    if all(tokens):
        return escaped
    # Re-join, escaping each dot that would leave an empty token on either side.
    out = [tokens[0]]
    for token in tokens[1:]:
        if out[-1] and token:
            out.append(".")
        else:
            out.append("%2E")
        out.append(token)
    return "".join(out)


def channel_subject(prefix: str, channel: str) -> str:
    """The subject that carries ``channel`` under ``prefix``."""
    return f"{prefix}.{escape_channel(channel)}"


def subject_channel(prefix: str, subject: str) -> str:
    """The channel of ``subject`` (inverse of :func:`channel_subject`)."""
    return _unescape(subject[len(prefix) + 1 :])


def consumer_name(group: str) -> str:
    """The durable consumer name of ``group`` (a valid JetStream name, one-to-one)."""
    return _NAME_UNSAFE.sub(_escape, group)


def message_id(record: RawRecord) -> str | None:
    """The ``Nats-Msg-Id`` of a record: ``<event id>:<content digest>``, or None without
    an event id.

    The event id makes a re-sent event (an emit retried, an outbox row relayed twice) one
    message for the stream's duplicate window; the digest of channel, key, body and headers
    (but for the emit time, correlation id and trace context, which a re-sealing changes)
    keeps records that share an event id but differ (a retry copy, a dead letter, a
    replay, a forged record) from being taken for re-sends and dropped.
    """
    event_id = record.headers.get(EVENT_ID)
    if not event_id:
        return None
    headers = sorted(item for item in record.headers.items() if item[0] not in _VOLATILE)
    content = _PACK((record.channel, record.key, record.body, headers))  # self-delimiting
    digest = hashlib.blake2b(content, digest_size=8).hexdigest()
    return f"{event_id.decode('utf-8', 'replace')}:{digest}"


def pattern_filter(prefix: str, pattern: str) -> str:
    """The narrowest subject filter sure to cover every channel ``pattern`` can match.

    The regular expression's literal start (letters, digits, ``-``, ``_`` and escaped dots)
    up to its last escaped dot gives whole subject tokens: ``orders\\.[a-z]+`` filters
    ``<prefix>.orders.>``. Anything else filters the whole ``<prefix>.>``; the driver then
    matches channels against the pattern itself.
    """
    if "|" in pattern:
        return f"{prefix}.>"
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c.isalnum() or c in "-_":
            literal.append(c)
            i += 1
        elif c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in ".-_":
            literal.append(pattern[i + 1])
            i += 2
        else:
            break
    # A quantifier right after the literal applies to its last character: drop that one.
    if i < len(pattern) and pattern[i] in "?*{" and literal:
        literal.pop()
    text = "".join(literal)
    if "." not in text:
        return f"{prefix}.>"
    head = text[: text.rindex(".")]
    if not head or "" in head.split("."):
        return f"{prefix}.>"
    return f"{prefix}.{escape_channel(head)}.>"
