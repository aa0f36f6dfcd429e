"""The NATS Streaming protocol messages, encoded and decoded by hand.

STAN's messages (stan.go ``pb/protocol.proto``, package ``pb``, proto3) are flat: strings,
bytes, varints and one enum, no nesting. A small wire codec of our own covers them, so the
driver depends on nats-py alone (no protobuf runtime, no generated code to keep in step).

Rules kept from proto3: fields equal to their default (0, "", b"", False) are not written;
unknown fields are skipped when decoding; signed ints are two's complement varints (negative
values take ten bytes). Field numbers and types are the ones of stan.go's proto file.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Self

import msgspec

from ...errors import DriverError

# Field kinds of our messages, by the attribute's type.
STRING, BYTES, INT, BOOL = range(4)
_KINDS = {str: STRING, bytes: BYTES, int: INT, bool: BOOL}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_MASK64 = (1 << 64) - 1


class ProtocolError(DriverError):
    """A frame from the server could not be decoded (not a STAN message of this type)."""


def encode_varint(value: int, out: bytearray) -> None:
    """Append ``value`` (0 <= value < 2**64) as a base-128 varint."""
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


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


class Message(msgspec.Struct, frozen=True, gc=False):
    """Base of the STAN messages: ``FIELDS`` maps field numbers to attributes, whose type
    says the wire's (str and bytes length-delimited, int and bool varints; ints are read as
    two's complement: no unsigned field of STAN's comes near 2**63).

    A msgspec struct, not a dataclass: one is made per delivery, and a frozen dataclass
    takes 16 times as long to build (a ``object.__setattr__`` per field).
    """

    FIELDS: ClassVar[dict[int, str]] = {}

    @classmethod
    def spec(cls) -> dict[int, tuple[str, int]]:
        """Field number -> (attribute, kind), worked out once per message type."""
        spec = _SPECS.get(cls)
        if spec is None:
            types = {field.name: field.type for field in msgspec.structs.fields(cls)}
            spec = {number: (name, _KINDS[types[name]]) for number, name in cls.FIELDS.items()}
            _SPECS[cls] = spec
        return spec

    def encode(self) -> bytes:
        out = bytearray()
        for number, (name, kind) in self.spec().items():
            value = getattr(self, name)
            if not value:
                continue
            if kind in (STRING, BYTES):
                out += len_field(number, value.encode() if kind == STRING else bytes(value))
            else:
                encode_varint(number << 3 | _VARINT, out)
                encode_varint(int(value) & _MASK64, out)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> Self:
        values: dict[str, Any] = {}
        spec = cls.spec()
        pos, end = 0, len(data)
        try:
            while pos < end:
                tag, pos = decode_varint(data, pos)
                number, wire = tag >> 3, tag & 7
                if wire == _VARINT:
                    raw_int, pos = decode_varint(data, pos)
                    field = spec.get(number)
                    if field is not None:
                        name, kind = field
                        if kind == INT:
                            values[name] = _signed(raw_int)
                        elif kind == BOOL:
                            values[name] = raw_int != 0
                        else:
                            raise ProtocolError(f"{cls.__name__}: field {number} is not a varint")
                elif wire == _LEN:
                    length, pos = decode_varint(data, pos)
                    if pos + length > end:
                        raise ProtocolError(f"{cls.__name__}: truncated field {number}")
                    chunk = bytes(data[pos : pos + length])
                    pos += length
                    field = spec.get(number)
                    if field is not None:
                        name, kind = field
                        if kind == STRING:
                            values[name] = chunk.decode()
                        elif kind == BYTES:
                            values[name] = chunk
                        else:
                            raise ProtocolError(f"{cls.__name__}: field {number} is not bytes")
                elif wire == _I64:
                    pos += 8
                elif wire == _I32:
                    pos += 4
                else:
                    raise ProtocolError(f"{cls.__name__}: unsupported wire type {wire}")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{cls.__name__}: a string field is not UTF-8") from exc
        if pos != end:
            raise ProtocolError(f"{cls.__name__}: frame ends inside a field")
        return cls(**values)


_SPECS: dict[type[Message], dict[int, tuple[str, int]]] = {}


class StartPosition(enum.IntEnum):
    """Where a new subscription begins (ignored when a durable or group resumes)."""

    NEW_ONLY = 0
    LAST_RECEIVED = 1
    TIME_DELTA_START = 2
    SEQUENCE_START = 3
    FIRST = 4


class PubMsg(Message, frozen=True, gc=False):
    """Client -> ``<pubPrefix>.<channel>``; answered by a PubAck on the reply subject."""

    FIELDS: ClassVar[dict[int, str]] = {
        1: "client_id",
        2: "guid",
        3: "subject",
        4: "reply",
        5: "data",
        6: "conn_id",
        10: "sha256",
    }
    client_id: str = ""
    guid: str = ""
    subject: str = ""
    reply: str = ""
    data: bytes = b""
    conn_id: bytes = b""
    sha256: bytes = b""


class PubAck(Message, frozen=True, gc=False):
    FIELDS: ClassVar[dict[int, str]] = {1: "guid", 2: "error"}
    guid: str = ""
    error: str = ""


class MsgProto(Message, frozen=True, gc=False):
    """Server -> a subscription's delivery inbox. ``timestamp`` is in nanoseconds."""

    FIELDS: ClassVar[dict[int, str]] = {
        1: "sequence",
        2: "subject",
        3: "reply",
        4: "data",
        5: "timestamp",
        6: "redelivered",
        7: "redelivery_count",
        10: "crc32",
    }
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

    FIELDS: ClassVar[dict[int, str]] = {1: "subject", 2: "sequence"}
    subject: str = ""
    sequence: int = 0


class ConnectRequest(Message, frozen=True, gc=False):
    FIELDS: ClassVar[dict[int, str]] = {
        1: "client_id",
        2: "heartbeat_inbox",
        3: "protocol",
        4: "conn_id",
        5: "ping_interval",
        6: "ping_max_out",
    }
    client_id: str = ""
    heartbeat_inbox: str = ""
    protocol: int = 1
    conn_id: bytes = b""
    ping_interval: int = 0
    ping_max_out: int = 0


class ConnectResponse(Message, frozen=True, gc=False):
    FIELDS: ClassVar[dict[int, str]] = {
        1: "pub_prefix",
        2: "sub_requests",
        3: "unsub_requests",
        4: "close_requests",
        5: "error",
        6: "sub_close_requests",
        7: "ping_requests",
        8: "ping_interval",
        9: "ping_max_out",
        10: "protocol",
        100: "public_key",
    }
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
    FIELDS: ClassVar[dict[int, str]] = {1: "conn_id"}
    conn_id: bytes = b""


class PingResponse(Message, frozen=True, gc=False):
    FIELDS: ClassVar[dict[int, str]] = {1: "error"}
    error: str = ""


class SubscriptionRequest(Message, frozen=True, gc=False):
    """Client -> ``subRequests``. ``start_time_delta`` is in nanoseconds before now."""

    FIELDS: ClassVar[dict[int, str]] = {
        1: "client_id",
        2: "subject",
        3: "q_group",
        4: "inbox",
        5: "max_in_flight",
        6: "ack_wait_in_secs",
        7: "durable_name",
        10: "start_position",
        11: "start_sequence",
        12: "start_time_delta",
    }
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
    FIELDS: ClassVar[dict[int, str]] = {2: "ack_inbox", 3: "error"}
    ack_inbox: str = ""
    error: str = ""


class UnsubscribeRequest(Message, frozen=True, gc=False):
    """Client -> ``unsubRequests`` (delete) or ``subCloseRequests`` (close, keep durables).

    ``inbox`` carries the subscription's ack inbox (the server looks it up by that first).
    """

    FIELDS: ClassVar[dict[int, str]] = {1: "client_id", 2: "subject", 3: "inbox", 4: "durable_name"}
    client_id: str = ""
    subject: str = ""
    inbox: str = ""
    durable_name: str = ""


class CloseRequest(Message, frozen=True, gc=False):
    FIELDS: ClassVar[dict[int, str]] = {1: "client_id"}
    client_id: str = ""


class CloseResponse(Message, frozen=True, gc=False):
    FIELDS: ClassVar[dict[int, str]] = {1: "error"}
    error: str = ""


def len_field(number: int, raw: bytes) -> bytes:
    """One length-delimited field (a string's or bytes' value), empty when ``raw`` is (the
    proto3 default is not written)."""
    if not raw:
        return b""
    out = bytearray()
    encode_varint(number << 3 | _LEN, out)
    encode_varint(len(raw), out)
    return bytes(out + raw)


def encode_pub_head(client_id: str, conn_id: bytes) -> bytes:
    """The fields every PubMsg of one session shares (client id, connection id)."""
    return len_field(1, client_id.encode()) + len_field(6, conn_id)


def encode_pub_channel(channel: str) -> bytes:
    """The PubMsg ``subject`` field (the channel), built once per channel."""
    return len_field(3, channel.encode())


_SMALL_LENGTHS = [bytes((n,)) for n in range(0x80)]
"""One-byte varints, by value."""


def encode_pub_msg(head: bytes, guid: bytes, channel_field: bytes, data: bytes) -> bytes:
    """A PubMsg from its parts: ``head`` from :func:`encode_pub_head`, a guid shorter than
    128 bytes, ``channel_field`` from :func:`encode_pub_channel`, and the data.

    Built without the generic path: the publish loop calls this per record. Protobuf
    fields may come in any order, so the shared parts are pre-encoded.
    """
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


def _varint(value: int) -> bytes:
    out = bytearray()
    encode_varint(value, out)
    return bytes(out)


def decode_msg_proto(data: bytes) -> MsgProto:
    """:meth:`MsgProto.decode` for the delivery hot path: same result, fewer calls.

    Tags of MsgProto's fields are one byte; anything unexpected goes the generic way.
    """
    sequence = timestamp = redelivery_count = 0
    subject = ""
    payload = b""
    redelivered = False
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            pos += 1
            if tag & 7 == _VARINT and tag < 0x80:
                value = data[pos]
                pos += 1
                if value & 0x80:
                    value &= 0x7F
                    shift = 7
                    while True:
                        byte = data[pos]
                        pos += 1
                        value |= (byte & 0x7F) << shift
                        if not byte & 0x80:
                            break
                        shift += 7
                if tag == 0x08:
                    sequence = value
                elif tag == 0x28:
                    timestamp = _signed(value)
                elif tag == 0x30:
                    redelivered = value != 0
                elif tag == 0x38:
                    redelivery_count = value
            elif tag in (0x12, 0x22):
                length = data[pos]
                pos += 1
                if length & 0x80:
                    length, pos = decode_varint(data, pos - 1)
                chunk = data[pos : pos + length]
                pos += length
                if tag == 0x12:
                    subject = chunk.decode()
                else:
                    payload = chunk
            else:
                return MsgProto.decode(data)
    except (IndexError, UnicodeDecodeError):
        return MsgProto.decode(data)  # raises the precise ProtocolError
    if pos != end:
        return MsgProto.decode(data)
    return MsgProto(
        sequence=sequence,
        subject=subject,
        data=payload,
        timestamp=timestamp,
        redelivered=redelivered,
        redelivery_count=redelivery_count,
    )
