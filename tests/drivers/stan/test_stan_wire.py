"""The STAN wire codec and Go's JSON envelope, without a server."""

from __future__ import annotations

import base64
import json
import random

import pytest

from hexa_event.drivers.stan.protocol import (
    Ack,
    ConnectRequest,
    ConnectResponse,
    Message,
    MsgProto,
    ProtocolError,
    PubAck,
    PubMsg,
    StartPosition,
    SubscriptionRequest,
    decode_body,
    decode_msg_proto,
    encode_ack,
    encode_ack_head,
    encode_body,
    encode_pub_channel,
    encode_pub_head,
    encode_pub_msg,
)
from hexa_event_services import pb_decode, pb_field


def test_golden_frames() -> None:
    """Bytes worked out by hand from the proto3 rules and stan.go's field numbers."""
    assert PubAck(guid="abc").encode() == b"\x0a\x03abc"
    assert PubAck.decode(b"\x0a\x03abc\x12\x02no") == PubAck(guid="abc", error="no")
    assert PubAck.decode(b"") == PubAck()  # an empty PubAck means "stored"
    assert Ack(subject="c", sequence=300).encode() == b"\x0a\x01c\x10\xac\x02"
    assert encode_ack(encode_ack_head("c"), 300) == Ack(subject="c", sequence=300).encode()
    # int32 -1 is a ten-byte varint
    assert SubscriptionRequest(max_in_flight=-1).encode() == b"\x28" + b"\xff" * 9 + b"\x01"
    assert SubscriptionRequest.decode(b"\x28" + b"\xff" * 9 + b"\x01").max_in_flight == -1
    frame = MsgProto(
        sequence=7, subject="ch", data=b"x", timestamp=1, redelivered=True, redelivery_count=2
    ).encode()
    assert frame == b"\x08\x07\x12\x02ch\x22\x01x\x28\x01\x30\x01\x38\x02"


def test_every_message_round_trips_and_agrees_with_an_independent_decoder() -> None:
    rng = random.Random(7)
    for _ in range(200):
        text = "".join(rng.choice("abcé.-_") for _ in range(rng.randint(0, 20)))
        data = rng.randbytes(rng.randint(0, 50))
        number = rng.randint(0, 2**40)
        request = SubscriptionRequest(
            client_id=text,
            subject=text + "x",
            q_group=text,
            inbox="_INBOX." + text,
            max_in_flight=number % 2**31,
            ack_wait_in_secs=30,
            durable_name=text,
            start_position=StartPosition.TIME_DELTA_START,
            start_sequence=number,
            start_time_delta=number,
        )
        assert SubscriptionRequest.decode(request.encode()) == request
        fields = pb_decode(request.encode())
        assert fields.get(11, 0) == number
        assert fields[10] == 2
        head = encode_pub_head("client", b"\x01\x02")
        pub = encode_pub_msg(head, b"guid-1", encode_pub_channel("orders"), data)
        assert PubMsg.decode(pub) == PubMsg(
            client_id="client", guid="guid-1", subject="orders", data=data, conn_id=b"\x01\x02"
        )
        msg = MsgProto(
            sequence=number,
            subject=text,
            data=data * rng.randint(1, 5),
            timestamp=number - 2**39,
            redelivered=rng.random() < 0.5,
            redelivery_count=rng.randint(0, 300),
            reply=text if rng.random() < 0.2 else "",  # a field the fast path leaves to the generic
            crc32=rng.randint(1, 2**32 - 1) if rng.random() < 0.3 else 0,
        )
        frame = msg.encode()
        assert MsgProto.decode(frame) == msg
        assert decode_msg_proto(frame) == msg
        assert decode_msg_proto(frame + pb_field(99, "future")) == msg
    with pytest.raises(ProtocolError):
        decode_msg_proto(MsgProto(sequence=1, data=b"xy").encode()[:-1])


def test_every_message_type_numbers_each_of_its_attributes_once() -> None:
    types = Message.__subclasses__()
    assert len(types) == 13
    for message_type in types:
        names = [name for name, _ in message_type.FIELDS.values()]
        assert sorted(names) == sorted(message_type.__struct_fields__), message_type
        filled = message_type(**{name: _sample(message_type, name) for name in names})
        assert message_type.decode(filled.encode()) == filled
        assert message_type.decode(b"") == message_type()


def _sample(message_type: type[Message], name: str) -> object:
    value = getattr(message_type(), name)
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**40)
    return "text-é" if isinstance(value, str) else b"\x00\xff"


def test_unknown_fields_are_skipped_and_bad_frames_refused() -> None:
    frame = (
        pb_field(1, "_STAN.pub.x")
        + pb_field(55, b"future")
        + pb_field(56, 12)
        + b"\x3d\x00\x00\x00\x00"  # field 7, wire type 5 (fixed32)
        + pb_field(7, "_STAN.ping")
    )
    response = ConnectResponse.decode(frame)
    assert response.pub_prefix == "_STAN.pub.x"
    assert response.ping_requests == "_STAN.ping"
    with pytest.raises(ProtocolError):
        ConnectResponse.decode(b"\x0a\x05ab")  # truncated
    with pytest.raises(ProtocolError):
        ConnectResponse.decode(b"\x0a\x02\xff\xfe")  # not UTF-8
    with pytest.raises(ProtocolError):
        ConnectResponse.decode(b"\x0a")  # tag without value
    assert ConnectRequest.decode(ConnectRequest(client_id="a").encode()).protocol == 1


def test_envelope_is_go_hestan_json() -> None:
    """Go's RawMessage: header values and payload in standard base64; our key beside them."""
    body = encode_body("order-1", {"_ctx_correlation_id": b"c-1", "bin": b"\xff\x00"}, b'{"a":1}')
    doc = json.loads(body)
    assert doc == {
        "header": {
            "_ctx_correlation_id": base64.b64encode(b"c-1").decode(),
            "bin": base64.b64encode(b"\xff\x00").decode(),
        },
        "payload": base64.b64encode(b'{"a":1}').decode(),
        "key": "order-1",
    }
    assert decode_body(body) == (
        "order-1",
        {"_ctx_correlation_id": b"c-1", "bin": b"\xff\x00"},
        b'{"a":1}',
    )


def test_bodies_written_by_go_and_by_foreign_publishers() -> None:
    # What Go's json.Marshal(hevent.RawMessage{...}) prints (map keys sorted, no key field).
    go_body = (
        b'{"header":{"_payload_encoder":"anNvbg==","_reply_channel":""},"payload":"eyJpZCI6MX0="}'
    )
    assert decode_body(go_body) == (
        "",
        {"_payload_encoder": b"json", "_reply_channel": b""},
        b'{"id":1}',
    )
    assert decode_body(b'{"payload":null,"header":{"a":"Yg=="}}') == ("", {"a": b"b"}, b"")
    nested = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # msgspec raised RecursionError
    for foreign in (b"plain text", b'{"order": 1}', b"{not json", b"", b'{"payload": 5}', nested):
        assert decode_body(foreign) == ("", {}, foreign)
    assert json.loads(encode_body("", {}, b"")) == {"payload": ""}


def test_the_delivery_fast_path_reads_long_varints_and_refuses_bad_ones() -> None:
    for msg in (
        MsgProto(sequence=2**62, subject="s", timestamp=-1, redelivery_count=2**35),  # 10 bytes
        MsgProto(sequence=16_384, data=b"x" * 20_000, timestamp=2**56),  # 3-byte length
    ):
        assert decode_msg_proto(msg.encode()) == msg
    for frame in (
        b"\x08" + b"\xff" * 10 + b"\x01",  # a varint of 11 bytes
        b"\x08\x96",  # ends inside a varint
        b"\x08\x01\x22\x85\x01" + b"x" * 10,  # data shorter than its length
    ):
        with pytest.raises(ProtocolError):
            decode_msg_proto(frame)


def test_first_deliveries_read_straight_through_decode_as_the_generic_way() -> None:
    """The straight read of a first delivery (nine-byte timestamp decoded without a loop)
    and the frames next to it that must go the other ways: same result as MsgProto.decode."""
    stamps = [2**56, 2**56 + 1, 2**63 - 1, 1_796_636_590_981_817_128]
    stamps += [random.Random(n).randrange(2**56, 2**63) for n in range(200)]
    for n, stamp in enumerate(stamps):
        msg = MsgProto(
            sequence=(1, 127, 128, 300_000, 2**63 - 1)[n % 5],
            subject=("orders", "", "x" * 127, "x" * 128)[n % 4],
            data=(b"", b"{}", b"x" * 127, b"x" * 128, b"x" * 20_000)[n % 5],
            timestamp=stamp,
        )
        frame = msg.encode()
        assert decode_msg_proto(frame) == msg == MsgProto.decode(frame)
    for msg in (
        MsgProto(sequence=5, subject="s", data=b"d", timestamp=2**56 - 1),  # eight bytes
        MsgProto(sequence=5, subject="s", data=b"d", timestamp=-1),  # ten bytes
        MsgProto(sequence=5, subject="s", data=b"d", timestamp=2**60, redelivered=True),
        MsgProto(sequence=5, subject="s", data=b"d", timestamp=2**60, crc32=7),
        MsgProto(sequence=5, subject="s", timestamp=2**60),  # no data field
    ):
        frame = msg.encode()
        assert decode_msg_proto(frame) == msg == MsgProto.decode(frame)
    # Nine bytes after the timestamp's tag whose continuation bits say otherwise: a one-byte
    # timestamp, then a redelivery count and a CRC.
    head = MsgProto(sequence=5, subject="s", data=b"d").encode()
    frame = head + bytes([0x28, 0x05, 0x38, 0x81, 0x80, 0x80, 0x80, 0x01, 0x50, 0x07])
    expected = MsgProto(
        sequence=5, subject="s", data=b"d", timestamp=5, redelivery_count=2**28 + 1, crc32=7
    )
    assert decode_msg_proto(frame) == expected == MsgProto.decode(frame)
