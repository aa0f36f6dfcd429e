"""Propagators: Go hexa-event's header names and shapes, W3C headers, leniency."""

from __future__ import annotations

import json

import pytest

from hexa_event import Context, User, UserType
from hexa_event.errors import DecodeError
from hexa_event.propagation import (
    BaggagePropagator,
    CompositePropagator,
    HexaPropagator,
    KeysPropagator,
    TraceContextPropagator,
    default_propagator,
)


def test_hexa_headers_have_go_names_and_user_shape() -> None:
    headers: dict[str, bytes] = {}
    user = User(id="u1", email="e@x", phone="1", name="N", username="n", roles=("r",))
    HexaPropagator().inject(Context(correlation_id="c1", locale="en", user=user), headers)
    assert headers["_ctx_correlation_id"] == b"c1"
    assert headers["_ctx_locale"] == b"en"
    assert json.loads(headers["_ctx_user"]) == {
        "_user_type": "_regular",
        "_user_identifier": "u1",
        "_user_email": "e@x",
        "_user_phone": "1",
        "_user_name": "N",
        "_user_username": "n",
        "_user_is_active": True,
        "_user_roles": ["r"],
    }


def test_context_without_user_still_writes_a_guest_for_go_consumers() -> None:
    headers: dict[str, bytes] = {}
    HexaPropagator().inject(Context(), headers)
    assert json.loads(headers["_ctx_user"])["_user_type"] == "_guest"
    assert HexaPropagator().extract(headers, Context()).user is None


def test_missing_headers_do_not_break_extraction() -> None:
    ctx = default_propagator().extract({}, Context(correlation_id=""))
    assert ctx.correlation_id  # generated
    assert ctx.user is None
    assert ctx.locale == ""


def test_go_emitted_user_is_read() -> None:
    go_user = {
        "_user_type": "_service",
        "_user_identifier": "svc-1",
        "_user_email": "",
        "_user_phone": "",
        "_user_name": "billing",
        "_user_username": "billing",
        "_user_is_active": True,
        "_user_roles": ["internal"],
    }
    ctx = HexaPropagator().extract({"_ctx_user": json.dumps(go_user).encode()}, Context())
    assert ctx.user == User(
        id="svc-1",
        type=UserType.SERVICE,
        name="billing",
        username="billing",
        roles=("internal",),
    )


@pytest.mark.parametrize("raw", [b"\xff", b"[1,2]", b'{"_user_type": "_alien"}', b"{"])
def test_malformed_user_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="_ctx_user"):
        HexaPropagator().extract({"_ctx_user": raw}, Context())


def test_keys_propagator_copies_values_and_strict_mode_requires_them() -> None:
    headers: dict[str, bytes] = {}
    KeysPropagator(["tenant", "absent"]).inject(Context(values={"tenant": "acme"}), headers)
    assert headers == {"tenant": b"acme"}
    assert KeysPropagator(["tenant"]).extract(headers, Context()).values == {"tenant": "acme"}
    with pytest.raises(KeyError, match="absent"):
        KeysPropagator(["absent"], strict=True).inject(Context(), {})


def test_trace_context_is_validated_and_ignored_when_malformed() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    propagator = TraceContextPropagator()
    assert propagator.extract({"traceparent": good.encode()}, Context()).traceparent == good
    assert propagator.extract({"traceparent": b"garbage"}, Context()).traceparent == ""


def test_baggage_round_trip_with_escaping() -> None:
    headers: dict[str, bytes] = {}
    baggage = {"tenant": "acme corp", "odd,key": "a=b;c"}
    BaggagePropagator().inject(Context(baggage=baggage), headers)
    assert dict(BaggagePropagator().extract(headers, Context()).baggage) == baggage


def test_composite_later_propagators_win_on_inject() -> None:
    headers: dict[str, bytes] = {}
    override = KeysPropagator(["_ctx_locale"])
    CompositePropagator(HexaPropagator(), override).inject(
        Context(locale="en", values={"_ctx_locale": "de"}), headers
    )
    assert headers["_ctx_locale"] == b"de"
