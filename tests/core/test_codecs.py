"""Codecs: encode, decode into the subscribed type, and clear errors for the wrong input."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pydantic
import pytest
from google.protobuf import struct_pb2, wrappers_pb2

from hexa_event import codecs
from hexa_event.errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    PayloadTypeError,
    UnknownCodecError,
)


@dataclass
class Line:
    sku: str
    qty: int


@dataclass
class Order:
    id: str
    lines: list[Line]


class Customer(pydantic.BaseModel):
    name: str
    vip: bool = False


class Point(msgspec.Struct):
    x: int
    y: int


JSON = codecs.get_codec("json")


def test_json_round_trips_nested_dataclasses() -> None:
    order = Order("o1", [Line("a", 2), Line("b", 1)])
    assert JSON.decode(JSON.encode(order), Order) == order


def test_json_round_trips_pydantic_and_structs_and_dicts() -> None:
    assert JSON.decode(JSON.encode(Customer(name="ada")), Customer) == Customer(name="ada")
    assert JSON.decode(JSON.encode(Point(1, 2)), Point) == Point(1, 2)
    assert JSON.decode(JSON.encode({"a": [1, 2]}), None) == {"a": [1, 2]}
    assert JSON.decode(b'{"a":1}', dict[str, int]) == {"a": 1}


def test_json_bytes_target_gets_the_body_untouched() -> None:
    assert JSON.decode(b'{"a":1}', bytes) == b'{"a":1}'


def test_json_mismatched_payload_is_a_payload_type_error() -> None:
    with pytest.raises(PayloadTypeError, match="Order"):
        JSON.decode(b'{"id": 3}', Order)
    with pytest.raises(PayloadTypeError, match="Customer"):
        JSON.decode(b'{"vip": true}', Customer)


def test_json_garbage_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        JSON.decode(b"{nope", None)
    with pytest.raises(DecodeError):
        JSON.decode(b"\xff", Order)
    with pytest.raises(DecodeError):
        JSON.decode(b"{nope", Customer)


def test_json_refuses_protobuf_messages_with_advice() -> None:
    with pytest.raises(EncodeError, match="codec='protobuf'"):
        JSON.encode(wrappers_pb2.StringValue(value="x"))


def test_json_unencodable_value_is_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="cannot encode"):
        JSON.encode(object())


def test_json_target_type_it_cannot_build_is_a_payload_type_error() -> None:
    class Plain:
        pass

    with pytest.raises(PayloadTypeError, match="Plain"):
        JSON.decode(b"{}", Plain)


def test_protojson_matches_go_protobuf_encoder() -> None:
    codec = codecs.get_codec("protobuf")
    message = struct_pb2.Struct()
    message.update({"orderId": "o1", "total": 3})
    body = codec.encode(message)
    assert body.startswith(b"{")
    assert b'"orderId"' in body
    assert codec.decode(body, struct_pb2.Struct) == message


def test_binary_protobuf_round_trip() -> None:
    codec = codecs.get_codec("protobuf-binary")
    message = wrappers_pb2.StringValue(value="hello")
    assert codec.decode(codec.encode(message), wrappers_pb2.StringValue) == message
    with pytest.raises(DecodeError):
        codec.decode(b"\xff\xff\xff", wrappers_pb2.StringValue)


def test_protobuf_codecs_need_a_message_type() -> None:
    for name in ("protobuf", "protobuf-binary"):
        codec = codecs.get_codec(name)
        with pytest.raises(PayloadTypeError, match="payload=<YourMessage>"):
            codec.decode(b"{}", dict)
        with pytest.raises(EncodeError):
            codec.encode({"not": "proto"})


def test_raw_codec_carries_bytes_only() -> None:
    raw = codecs.get_codec("raw")
    assert raw.decode(raw.encode(b"\x00\x01"), bytes) == b"\x00\x01"
    with pytest.raises(EncodeError):
        raw.encode("text")
    with pytest.raises(PayloadTypeError):
        raw.decode(b"x", Order)


def test_registry_is_open_and_names_known_codecs_on_miss() -> None:
    class Upper:
        name = "upper-test"
        content_type = "text/plain"

        def encode(self, value: object) -> bytes:
            return str(value).upper().encode()

        def decode(self, data: bytes, target: object) -> object:
            return data.decode()

    codecs.register_codec(Upper())
    assert codecs.get_codec("upper-test").encode("a") == b"A"
    with pytest.raises(ConfigurationError, match="already registered"):
        codecs.register_codec(Upper())
    with pytest.raises(UnknownCodecError, match="json"):
        codecs.get_codec("nope")
