"""A foreign producer's ``_ctx_user`` in a shape Go refuses: never read as something else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hexa_event import Context
from hexa_event.errors import DecodeError
from hexa_event.propagation import HexaPropagator, default_propagator


def _user(**fields: Any) -> dict[str, bytes]:
    user = {"_user_type": "_regular", "_user_identifier": "u1", **fields}
    return {"_ctx_user": json.dumps(user).encode()}


@pytest.mark.parametrize(
    "fields",
    [
        {"_user_is_active": "false"},  # read as bool("false"): an active user
        {"_user_is_active": 0},
        {"_user_roles": "admin"},  # read as the roles a, d, m, i, n
        {"_user_roles": {"admin": True}},
    ],
)
def test_a_user_field_of_the_wrong_type_is_a_decode_error(fields: dict[str, Any]) -> None:
    with pytest.raises(DecodeError, match="_ctx_user"):
        HexaPropagator().extract(_user(**fields), Context())
    with pytest.raises(DecodeError, match="_ctx_user"):
        default_propagator().extract(_user(**fields), Context())


def test_null_and_missing_user_fields_take_their_defaults() -> None:
    user = HexaPropagator().extract(_user(_user_is_active=None, _user_roles=None), Context()).user
    assert user is not None
    assert (user.id, user.is_active, user.roles) == ("u1", False, ())  # as bool(None)
    user = (
        HexaPropagator()
        .extract(_user(_user_is_active=False, _user_roles=["admin"]), Context())
        .user
    )
    assert user is not None
    assert (user.is_active, user.roles) == (False, ("admin",))


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_a_user_nested_past_recursion_is_a_decode_error() -> None:
    """msgspec raises RecursionError for it, which the propagator let out (the contract, and
    what ``hexa-event tail`` catches to show a context error, say DecodeError)."""
    with pytest.raises(DecodeError, match="_ctx_user"):
        default_propagator().extract(
            {"_ctx_user": b'{"_user_identifier": ' + DEEP + b"}"}, Context()
        )


def test_codecs_raise_decode_error_for_bodies_they_cannot_parse() -> None:
    """The Codec contract: DecodeError for bytes that do not parse. JSON nested past
    msgspec's depth raised RecursionError; protojson that is not UTF-8 UnicodeDecodeError."""
    from google.protobuf.struct_pb2 import Struct

    from hexa_event.codecs import get_codec

    for target in (None, list[object]):
        with pytest.raises(DecodeError):
            get_codec("json").decode(DEEP, target)
    for body in (b"\xff\xfe", DEEP):
        with pytest.raises(DecodeError):
            get_codec("protobuf").decode(body, Struct)


def test_a_user_without_its_active_flag_is_not_active() -> None:
    """Go's zero value for a missing ``_user_is_active`` is false (and Go hexa refuses the
    user outright); reading a foreign producer's user as active by default granted what
    the producer never said."""
    data = {"_user_type": "_regular", "_user_identifier": "u1", "_user_roles": ["admin"]}
    headers = {"_ctx_user": json.dumps(data).encode()}
    user = HexaPropagator().extract(headers, Context()).user
    assert user is not None
    assert (user.id, user.is_active, user.roles) == ("u1", False, ("admin",))
