"""Names on the wire: channel <-> subject (``<prefix>.c``, or ``<prefix>.%p<n>.c`` in
partition n), action -> consumer name, record -> message id. What NATS forbids in a
subject or name is escaped as ``%XX``, one-to-one, so :func:`subject_channel` inverts
:func:`channel_subject`. The rules and why: docs/engines/nats.md, "Emitting" and "Order".
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from ...driver import RawRecord

_SUBJECT_UNSAFE = re.compile(r"[%\s*>\x00-\x1f\x7f]")
_NAME_UNSAFE = re.compile(r"[%\s*>.\\/\x00-\x1f\x7f]")
_ESCAPED = re.compile(rb"%([0-9A-Fa-f]{2})")
_LONE_DOT = re.compile(r"(?<![^.])\.|\.(?![^.])")
"""A dot that would leave an empty subject token on either side."""
_LITERAL = re.compile(r"(?:[\w-]|\\[.\-_])*")
"""The literal start of a pattern: letters, digits, ``-``, ``_`` and escaped ``.-_``."""

EVENT_ID = "HEXA_EVENT_ID"
_PACK = msgspec.msgpack.Encoder().encode
# Headers that differ between two sealings of one event (the emit time, a generated
# correlation id, the trace context of the emitting span): left out of the content digest.
_VOLATILE = frozenset(
    {"HEXA_EVENT_TIME", "_ctx_correlation_id", "traceparent", "tracestate", "ce_time"}
)


def _escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode())


def escape_channel(channel: str) -> str:
    """The subject tokens of ``channel`` (without the prefix)."""
    return _LONE_DOT.sub("%2E", _SUBJECT_UNSAFE.sub(_escape, channel))


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
    found = _PARTITION.match(rest)
    rest = rest[found.end() :] if found else rest
    if "%" not in rest:
        return rest
    return _ESCAPED.sub(lambda m: bytes([int(m[1], 16)]), rest.encode()).decode("utf-8", "replace")


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
    """The partition of ``record`` among ``partitions``, Kafka's default partitioner:
    ``(murmur2(utf-8 key) & 0x7FFFFFFF) % partitions``; a record without a key is placed by
    its event id (``HEXA_EVENT_ID``), or in partition 0 without one."""
    data = record.key.encode() if record.key else record.headers.get(EVENT_ID)
    if partitions <= 1 or not data:
        return 0
    return (murmur2(data) & 0x7FFFFFFF) % partitions


def consumer_name(group: str) -> str:
    """The durable consumer name of ``group`` (a valid JetStream name, one-to-one)."""
    return _NAME_UNSAFE.sub(_escape, group)


def message_id(record: RawRecord) -> str | None:
    """The ``Nats-Msg-Id`` of a record: ``<event id>:<digest>`` of its channel, key, body
    and headers but the volatile ones (None without an event id): a re-sent event is stored
    once, records that share an event id but differ are not (docs: "Emitting")."""
    event_id = record.headers.get(EVENT_ID)
    if not event_id:
        return None
    headers = sorted(item for item in record.headers.items() if item[0] not in _VOLATILE)
    content = _PACK((record.channel, record.key, record.body, headers))  # self-delimiting
    digest = hashlib.blake2b(content, digest_size=8).hexdigest()
    return f"{event_id.decode('utf-8', 'replace')}:{digest}"


def pattern_filter(prefix: str, pattern: str) -> str:
    """The narrowest subject filter sure to cover every channel ``pattern`` can match (for
    one partition pass :func:`partition_prefix` as ``prefix``): the pattern's literal start
    up to its last escaped dot, ``orders\\.[a-z]+`` filters ``<prefix>.orders.>``; else the
    whole ``<prefix>.>`` (the driver then matches channels against the pattern itself)."""
    literal = _LITERAL.match(pattern)
    assert literal is not None  # it matches the empty string
    text = literal.group().replace("\\", "")
    # A quantifier right after the literal applies to its last character: drop that one.
    if pattern[literal.end() : literal.end() + 1] in ("?", "*", "{"):
        text = text[:-1]
    head = text.rpartition(".")[0]
    if "|" in pattern or not head or "" in head.split("."):
        return f"{prefix}.>"  # alternatives, or no whole subject token before the last dot
    return f"{prefix}.{escape_channel(head)}.>"
