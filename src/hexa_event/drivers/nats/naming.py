"""Names on the wire: channel <-> subject, action -> consumer name, record -> message id.

Subjects: channel ``c`` is ``<prefix>.c``. A channel's dots stay token separators (so
``orders.eu`` is ``hexa.orders.eu`` and NATS tools filter it naturally); what NATS forbids in
a subject is escaped as ``%XX`` (UTF-8 bytes, upper-case hex): ``%`` itself, whitespace,
``*``, ``>``, control characters, and a dot that would make an empty token (leading,
trailing or doubled). The mapping is one-to-one, so :func:`subject_channel` inverts it.

Partitions (``NatsOptions(partitions=N)``): the record of key ``k`` on channel ``c`` is
subject ``<prefix>.%p<n>.c`` with ``n = partition_of(k, N)``. The partition token comes
right after the prefix, so one partition of a pattern is still one subject filter
(``<prefix>.%p3.orders.>``; NATS wildcards cannot say "ends with"), and ``<prefix>.*.c``
is every partition of ``c``. No escaped channel starts with ``%p`` (an escaped ``%`` is
always ``%25``), so :func:`subject_channel` and :func:`subject_partition` invert it.

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


def channel_subject(prefix: str, channel: str, partition: int | None = None) -> str:
    """The subject that carries ``channel`` under ``prefix`` (in ``partition``, if any)."""
    return f"{partition_prefix(prefix, partition)}.{escape_channel(channel)}"


def partition_prefix(prefix: str, partition: int | None) -> str:
    """``<prefix>.%p<partition>``, or ``prefix`` itself for no partition."""
    return prefix if partition is None else f"{prefix}.%p{partition}"


_PARTITION = re.compile(r"%p(\d+)\.")


def subject_channel(prefix: str, subject: str) -> str:
    """The channel of ``subject`` (inverse of :func:`channel_subject`, any partition)."""
    rest = subject[len(prefix) + 1 :]
    if rest.startswith("%p"):
        found = _PARTITION.match(rest)
        if found is not None:
            rest = rest[found.end() :]
    return _unescape(rest)


def subject_partition(prefix: str, subject: str) -> int | None:
    """The partition of ``subject`` (None for an unpartitioned subject)."""
    found = _PARTITION.match(subject, len(prefix) + 1)
    return int(found.group(1)) if found is not None else None


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (seed ``0x9747B28C``) of ``data``, as a signed 32-bit int."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length & 3
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(record: RawRecord, partitions: int) -> int:
    """The partition of ``record`` among ``partitions``: Kafka's default partitioner.

    ``(murmur2(utf-8 key) & 0x7FFFFFFF) % partitions``, so a key lands in the partition a
    Kafka producer would pick for the same count. A record without a key is placed by its
    event id (``HEXA_EVENT_ID``: keyless records spread, and a re-sent one keeps its
    subject), or in partition 0 when it has none.
    """
    if partitions <= 1:
        return 0
    if record.key:
        data = record.key.encode()
    else:
        event_id = record.headers.get(EVENT_ID)
        if not event_id:
            return 0
        data = event_id
    return (murmur2(data) & 0x7FFFFFFF) % partitions


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

    For one partition pass :func:`partition_prefix` as ``prefix``.

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
