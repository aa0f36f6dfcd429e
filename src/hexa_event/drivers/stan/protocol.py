"""The NATS Streaming protocol messages (stan.go ``pb/protocol.proto``), encoded by hand.

A small proto3 codec of our own (defaults not written, unknown fields skipped, ints as two's
complement varints), so the driver needs nats-py alone (docs/engines/stan.md, Internals).
A message's body is Go hexa-event's JSON envelope (:mod:`..kit.goenvelope`), the record's key
as its top-level ``"key"`` (STAN has no headers).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from itertools import count
from typing import Any, ClassVar, Self

import msgspec

from ...errors import DriverError
from ..kit import goenvelope

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FIXED = {_I64: 8, _I32: 4}
_MASK64 = (1 << 64) - 1


class ProtocolError(DriverError):
    """A frame from the server could not be decoded (not a STAN message of this type)."""


def _varint(value: int) -> bytes:
    """``value`` (0 <= value < 2**64) as a base-128 varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    result = shift = 0
    while True:
        try:
            byte = data[pos]
        except IndexError:
            raise ProtocolError("truncated varint in a STAN frame") from None
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("varint longer than 10 bytes in a STAN frame")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# How a field's value is read from the wire, by the attribute's type (str and bytes are
# length-delimited, int and bool varints).
_READ: dict[Any, Any] = {str: bytes.decode, bytes: bytes, int: _signed, bool: bool}


class Message(msgspec.Struct, frozen=True, gc=False):
    """Base of the STAN messages: attributes are fields 1, 2, ... in order, or ``NUMBERS``
    where the proto skips some; ``FIELDS`` maps field numbers to (attribute, reader from
    :data:`_READ`). msgspec structs: cheap to make, one per delivery."""

    NUMBERS: ClassVar[tuple[int, ...]] = ()
    FIELDS: ClassVar[dict[int, tuple[str, Any]]] = {}

    def encode(self) -> bytes:
        out = bytearray()
        for number, (name, _) in self.FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, str):
                value = value.encode()
            if isinstance(value, bytes):
                out += len_field(number, value)
            elif value:
                out += _varint(number << 3 | _VARINT) + _varint(int(value) & _MASK64)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Self:
        values: dict[str, Any] = {}
        pos, end = 0, len(data)
        name = cls.__name__
        try:
            while pos < end:
                tag, pos = decode_varint(data, pos)
                number, wire = tag >> 3, tag & 7
                value: int | bytes
                if wire == _VARINT:
                    value, pos = decode_varint(data, pos)
                elif wire == _LEN:
                    length, pos = decode_varint(data, pos)
                    if pos + length > end:
                        raise ProtocolError(f"{name}: truncated field {number}")
                    value, pos = bytes(data[pos : pos + length]), pos + length
                elif wire in _FIXED:
                    pos += _FIXED[wire]
                    continue
                else:
                    raise ProtocolError(f"{name}: unsupported wire type {wire}")
                field = cls.FIELDS.get(number)
                if field is not None:
                    if isinstance(value, bytes) != (field[1] in (bytes, bytes.decode)):
                        raise ProtocolError(f"{name}: field {number} has the wrong wire type")
                    values[field[0]] = field[1](value)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{name}: a string field is not UTF-8") from exc
        if pos != end:
            raise ProtocolError(f"{name}: frame ends inside a field")
        return cls(**values)


class StartPosition(enum.IntEnum):
    """Where a new subscription begins (ignored when a durable or group resumes)."""

    NEW_ONLY = 0
    LAST_RECEIVED = 1
    TIME_DELTA_START = 2
    SEQUENCE_START = 3
    FIRST = 4


class PubMsg(Message, frozen=True, gc=False):
    """Client -> ``<pubPrefix>.<channel>``; answered by a PubAck on the reply subject."""

    NUMBERS = (1, 2, 3, 4, 5, 6, 10)
    client_id: str = ""
    guid: str = ""
    subject: str = ""
    reply: str = ""
    data: bytes = b""
    conn_id: bytes = b""
    sha256: bytes = b""


class PubAck(Message, frozen=True, gc=False):
    guid: str = ""
    error: str = ""


class MsgProto(Message, frozen=True, gc=False):
    """Server -> a subscription's delivery inbox. ``timestamp`` is in nanoseconds."""

    NUMBERS = (1, 2, 3, 4, 5, 6, 7, 10)
    sequence: int = 0
    subject: str = ""
    reply: str = ""
    data: bytes = b""
    timestamp: int = 0
    redelivered: bool = False
    redelivery_count: int = 0
    crc32: int = 0


class Ack(Message, frozen=True, gc=False):
    """Client -> a subscription's ack inbox; no reply."""

    subject: str = ""
    sequence: int = 0


class ConnectRequest(Message, frozen=True, gc=False):
    client_id: str = ""
    heartbeat_inbox: str = ""
    protocol: int = 1
    conn_id: bytes = b""
    ping_interval: int = 0
    ping_max_out: int = 0


class ConnectResponse(Message, frozen=True, gc=False):
    NUMBERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100)
    pub_prefix: str = ""
    sub_requests: str = ""
    unsub_requests: str = ""
    close_requests: str = ""
    error: str = ""
    sub_close_requests: str = ""
    ping_requests: str = ""
    ping_interval: int = 0
    ping_max_out: int = 0
    protocol: int = 0
    public_key: str = ""


class Ping(Message, frozen=True, gc=False):
    conn_id: bytes = b""


class PingResponse(Message, frozen=True, gc=False):
    error: str = ""


class SubscriptionRequest(Message, frozen=True, gc=False):
    """Client -> ``subRequests``. ``start_time_delta`` is in nanoseconds before now."""

    NUMBERS = (1, 2, 3, 4, 5, 6, 7, 10, 11, 12)
    client_id: str = ""
    subject: str = ""
    q_group: str = ""
    inbox: str = ""
    max_in_flight: int = 0
    ack_wait_in_secs: int = 0
    durable_name: str = ""
    start_position: int = StartPosition.NEW_ONLY
    start_sequence: int = 0
    start_time_delta: int = 0


class SubscriptionResponse(Message, frozen=True, gc=False):
    NUMBERS = (2, 3)
    ack_inbox: str = ""
    error: str = ""


class UnsubscribeRequest(Message, frozen=True, gc=False):
    """Client -> ``unsubRequests`` (delete) or ``subCloseRequests`` (close, keep durables);
    ``inbox`` is the subscription's ack inbox."""

    client_id: str = ""
    subject: str = ""
    inbox: str = ""
    durable_name: str = ""


class CloseRequest(Message, frozen=True, gc=False):
    client_id: str = ""


class CloseResponse(Message, frozen=True, gc=False):
    error: str = ""


for _type in Message.__subclasses__():
    _types = {field.name: field.type for field in msgspec.structs.fields(_type)}
    _type.FIELDS = {
        number: (name, _READ[_types[name]])
        for number, name in zip(_type.NUMBERS or count(1), _type.__struct_fields__, strict=False)
    }


def len_field(number: int, raw: bytes) -> bytes:
    """One length-delimited field; empty when ``raw`` is (proto3 defaults are not written)."""
    return _varint(number << 3 | _LEN) + _varint(len(raw)) + raw if raw else b""


def encode_pub_head(client_id: str, conn_id: bytes) -> bytes:
    """The fields every PubMsg of one session shares (client id, connection id)."""
    return len_field(1, client_id.encode()) + len_field(6, conn_id)


def encode_pub_channel(channel: str) -> bytes:
    """The PubMsg ``subject`` field (the channel), built once per channel."""
    return len_field(3, channel.encode())


_SMALL_LENGTHS = [bytes((n,)) for n in range(0x80)]
"""One-byte varints, by value."""


def encode_pub_msg(head: bytes, guid: bytes, channel_field: bytes, data: bytes) -> bytes:
    """A PubMsg from its parts, the shared ones pre-built (fields may come in any order):
    ``head`` from :func:`encode_pub_head`, a guid under 128 bytes, ``channel_field`` from
    :func:`encode_pub_channel`, then the data."""
    size = len(data)
    if size < 0x80:
        length = _SMALL_LENGTHS[size]
    elif size < 0x4000:
        length = bytes((size & 0x7F | 0x80, size >> 7))
    else:
        length = _varint(size)
    return b"".join(
        (head, b"\x12", _SMALL_LENGTHS[len(guid)], guid, channel_field, b"\x2a", length, data)
    )


def encode_ack_head(channel: str) -> bytes:
    """The channel field every Ack of one subscription shares."""
    return len_field(1, channel.encode())


def encode_ack(head: bytes, sequence: int) -> bytes:
    """An Ack frame for ``sequence``; ``head`` from :func:`encode_ack_head`."""
    return head + b"\x10" + _varint(sequence) if sequence else head


_MSG_SLOTS = {0x08: 0, 0x28: 1, 0x30: 2, 0x38: 3, 0x50: 4, 0x12: 5, 0x22: 6}
"""MsgProto's one-byte tags -> a slot of :func:`decode_msg_proto` (varints, then lengths)."""


_STAMP_MARKS = 0x80_80_80_80_80_80_80_80_80
_STAMP_ENDED = 0x00_80_80_80_80_80_80_80_80
"""A nine-byte varint's continuation bits: set in the first eight bytes, clear in the last."""


def _stamp(nine: int) -> int:
    """A nine-byte varint (any time in nanoseconds from 1972 to 2262), read as one
    little-endian number, decoded without a loop: the continuation bits cleared, the 7-bit
    groups closed up pairwise (7 -> 14 -> 28 -> 56 -> 63 bits)."""
    v = nine & 0x7F7F_7F7F_7F7F_7F7F_7F
    v = (v & 0x7F_007F_007F_007F_007F) | (v >> 1 & 0x3F80_3F80_3F80_3F80)
    v = (v & 0x3FFF_0000_3FFF_0000_3FFF) | (v >> 2 & 0x0FFF_C000_0FFF_C000)
    v = (v & 0x0FFF_FFFF_0000_0000_0FFF_FFFF) | (v >> 4 & 0x00FF_FFFF_F000_0000)
    return (v & 0x00FF_FFFF_FFFF_FFFF) | (v >> 8 & 0x7F00_0000_0000_0000)


def _first_delivery(data: bytes) -> MsgProto | None:
    """A MsgProto as the server writes a first delivery, read straight through: sequence,
    subject, data and a nine-byte timestamp, in that order. None for any other frame."""
    if data[0] != 0x08:
        return None
    sequence = data[1]
    pos = 2
    if sequence & 0x80:  # decode_varint inline (a call per varint cost more)
        sequence &= 0x7F
        shift = 7
        while True:
            byte = data[pos]
            pos += 1
            sequence |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                return None
    length = data[pos + 1]
    if data[pos] != 0x12 or length & 0x80:
        return None
    subject = data[pos + 2 : pos + 2 + length]
    pos += 2 + length
    if data[pos] != 0x22:
        return None
    size = data[pos + 1]
    pos += 2
    if size & 0x80:
        size &= 0x7F
        shift = 7
        while True:
            byte = data[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                return None
    end = pos + size
    stamp = int.from_bytes(data[end + 1 : end + 10], "little")
    if data[end] != 0x28 or len(data) != end + 10 or stamp & _STAMP_MARKS != _STAMP_ENDED:
        return None
    # Positional, in the fields' order (cheaper than keywords).
    return MsgProto(sequence, subject.decode(), "", data[pos:end], _stamp(stamp), False, 0, 0)


def decode_msg_proto(data: bytes) -> MsgProto:
    """:meth:`MsgProto.decode` for the delivery hot path: same result, fewer calls. A first
    delivery the way the server writes it, then any frame by a loop over its fields, and
    anything unexpected the generic way."""
    try:
        proto = _first_delivery(data)
        if proto is not None:
            return proto
    except (IndexError, UnicodeDecodeError):
        pass
    fields: list[Any] = [0, 0, 0, 0, 0, b"", b""]
    pos, end = 0, len(data)
    try:
        while pos < end:
            slot = _MSG_SLOTS[data[pos]]
            value: Any = data[pos + 1]
            pos += 2
            if value & 0x80:  # decode_varint inline (a call per multi-byte varint cost more)
                value &= 0x7F
                shift = 7
                while True:
                    byte = data[pos]
                    pos += 1
                    value |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift > 63:
                        raise IndexError  # too long: the generic way says so
            if slot > 4:  # length-delimited: the subject or the data
                value, pos = data[pos : pos + value], pos + value
            fields[slot] = value
        if pos == end:
            sequence, stamp, resent, count, crc, subject, payload = fields
            # Positional, in the fields' order (cheaper than keywords).
            return MsgProto(
                sequence, subject.decode(), "", payload, _signed(stamp), resent != 0, count, crc
            )
    except (KeyError, IndexError, UnicodeDecodeError):
        pass
    return MsgProto.decode(data)  # decodes the unusual, raises the precise ProtocolError


encode_body = goenvelope.encode
"""The body of a record: its key, headers and payload in Go's envelope."""


def decode_body(data: bytes) -> tuple[str, Mapping[str, bytes], bytes]:
    """``(key, headers, payload)`` of a message body; a body that is not Go's envelope (a
    plain STAN publisher's) comes back whole, with no headers: a foreign record."""
    return goenvelope.decode(data) or ("", {}, data)
