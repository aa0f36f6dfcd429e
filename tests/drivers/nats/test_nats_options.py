"""Options, URLs, names and header encoding of the JetStream driver (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NatsPyClient

import hexa_event as he
from hexa_event.driver import RawRecord
from hexa_event.drivers.nats import (
    NatsDriver,
    NatsOptions,
    NatsSubscriptionOptions,
    channel_subject,
    consumer_name,
    subject_channel,
)
from hexa_event.drivers.nats import headers as wire
from hexa_event.drivers.nats.client import Client
from hexa_event.drivers.nats.naming import message_id, pattern_filter
from hexa_event.errors import ConfigurationError


def test_url_gives_servers_credentials_and_options() -> None:
    options = NatsOptions.from_url(
        "nats://ann:s%40cret@h1:4222,h2:4223?stream=ORDERS&storage=memory"
    )
    assert options.servers == ("nats://h1:4222", "nats://h2:4223")
    assert (options.user, options.password) == ("ann", "s@cret")
    assert options.stream == "ORDERS"
    assert options.storage == "memory"
    token = NatsOptions.from_url(
        "tls://t0ken@host:4222?delayed_publish=false&max_age=60&duplicate_window=30"
    )
    assert token.token == "t0ken"
    assert token.servers == ("tls://host:4222",)
    assert token.delayed_publish is False
    assert token.max_age == 60.0


def test_secrets_never_show() -> None:
    options = NatsOptions.from_url(
        "nats://ann:hunter2@host:4222",
        nkeys_seed="/keys/seed.nk",
        client_options={"user_jwt_cb": "x", "nkeys_seed_str": "SUAXYZ"},
    )
    shown = repr(options) + str(NatsDriver(options))
    assert "hunter2" not in shown
    assert "SUAXYZ" not in shown
    assert "/keys/seed.nk" not in shown
    assert "***" in shown
    token = repr(NatsOptions(token="abc123", servers=("nats://u:pw@h:1",)))
    assert "abc123" not in token
    assert ":pw@" not in token


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"servers": ()}, "servers"),
        ({"stream": "a.b"}, "stream"),
        ({"subject_prefix": "a..b"}, "subject_prefix"),
        ({"subject_prefix": "a.>"}, "subject_prefix"),
        ({"storage": "disk"}, "storage"),
        ({"duplicate_window": 0.01}, "duplicate_window"),
        ({"max_age": 60, "duplicate_window": 120}, "cannot exceed max_age"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"token": "t", "user": "u"}, "token"),
        ({"stream_config": {"subjects": ["x.>"]}}, "subject_prefix"),
        ({"client_options": {"max_reconnect_attempts": 3}}, "reconnects forever"),
        ({"publish_timeout": float("nan")}, "publish_timeout"),
    ],
)
def test_bad_options_say_what_to_change(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        NatsOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"ack_wait": 0.5}, "ack_wait"),
        ({"max_deliver": 0}, "max_deliver"),
        ({"max_ack_pending": 0}, "max_ack_pending"),
        ({"batch": 0}, "batch"),
        ({"heartbeat": 20}, "heartbeat"),
        ({"consumer_config": {"ack_policy": "none"}}, "ack_policy"),
        ({"durable": ""}, "durable"),
    ],
)
def test_bad_subscription_options(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        NatsSubscriptionOptions(**kwargs)  # type: ignore[arg-type]


def test_unknown_url_options_are_named() -> None:
    with pytest.raises(ConfigurationError, match="colour"):
        NatsOptions.from_url("nats://h:4222?colour=red")
    with pytest.raises(ConfigurationError, match="client_options"):
        he.connect("nats://h:4222", colour="red")


async def test_subscriptions_take_only_their_own_options() -> None:
    driver = NatsDriver()
    with pytest.raises(ConfigurationError, match="NatsSubscriptionOptions"):
        await driver.subscribe(he.driver.SubscriptionSpec(group="g", channels=("c",), options={}))
    await driver.close()


channels = st.text(min_size=1).filter(lambda c: "\x00" not in c)


@given(channels)
def test_channel_subjects_are_valid_and_invertible(channel: str) -> None:
    subject = channel_subject("hexa", channel)
    tokens = subject.split(".")
    assert all(tokens), subject
    assert not any(c in subject for c in " \t\r\n*>")
    assert subject_channel("hexa", subject) == channel


@given(channels, channels)
def test_distinct_channels_get_distinct_subjects(a: str, b: str) -> None:
    if a != b:
        assert channel_subject("p", a) != channel_subject("p", b)


@given(channels)
def test_consumer_names_are_valid(group: str) -> None:
    name = consumer_name(group)
    assert not any(c in name for c in " \t\r\n*>./\\")
    assert name


def test_names_read_naturally() -> None:
    assert channel_subject("hexa", "orders.eu") == "hexa.orders.eu"
    assert channel_subject("hexa", "a..b") == "hexa.a%2E%2Eb"
    assert channel_subject("hexa", "50% off *") == "hexa.50%25%20off%20%2A"
    assert consumer_name("billing.charge-card") == "billing%2Echarge-card"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"orders\.[a-z]+", "hexa.orders.>"),
        (r"orders\.eu\..*", "hexa.orders.eu.>"),
        (r"orders.*", "hexa.>"),
        (r"orders\.a|billing\.b", "hexa.>"),
        (r"(?i)orders\.x", "hexa.>"),
        (r"orders\.?x", "hexa.>"),
        (r"\.x", "hexa.>"),
    ],
)
def test_pattern_filters_never_miss_a_match(pattern: str, expected: str) -> None:
    assert pattern_filter("hexa", pattern) == expected


def test_message_ids_tell_copies_from_re_sends() -> None:
    sealed = {"HEXA_EVENT_ID": b"e1", "HEXA_EVENT_TIME": b"1", "_ctx_correlation_id": b"c1"}
    original = RawRecord("orders", "k", sealed, b"{}")
    resealed = RawRecord(
        "orders", "k", {**sealed, "HEXA_EVENT_TIME": b"2", "_ctx_correlation_id": b"c2"}, b"{}"
    )
    first = message_id(original)
    assert first is not None
    assert first.startswith("e1:")
    assert message_id(resealed) == first  # the same event sealed again: a re-send
    copies = [
        RawRecord("act.retry.1", "k", {**sealed, "HEXA_ATTEMPT": b"2"}, b"{}"),
        RawRecord("act.retry.2", "k", {**sealed, "HEXA_ATTEMPT": b"3"}, b"{}"),
        RawRecord("act.dlq", "k", {**sealed, "HEXA_DEAD_LETTER_REASON": b"poison"}, b"{}"),
        RawRecord("orders", "k", {**sealed, "HEXA_REPLAYED_FROM": b"HEXA-9"}, b"{}"),
        RawRecord("orders", "k", sealed, b"{not json"),
        RawRecord("orders", "k2", sealed, b"{}"),
    ]
    assert len({first, *(message_id(c) for c in copies)}) == 1 + len(copies)
    assert message_id(RawRecord("orders", "k", {}, b"")) is None


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,10}", fullmatch=True), st.binary()))
def test_headers_round_trip(headers: dict[str, bytes]) -> None:
    headers = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
    headers.pop(wire.KEY, None)
    headers.pop(wire.BASE64, None)
    headers.pop(wire.ACCEPTED_AT, None)
    sent = wire.encode("key", headers, "id")
    # What nats-py does to text values on the way: trims them.
    received = {k: v.strip() for k, v in sent.items()}
    assert wire.decode(received) == ("key", headers, None)


async def test_credentials_and_tls_reach_the_client_and_errors_hide_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    seen: dict[str, Any] = {}

    async def fake_connect(self: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise OSError("connect to nats://ann:hunter2@h:4222 refused")

    monkeypatch.setattr("nats.aio.client.Client.connect", fake_connect)
    driver = NatsDriver.from_url(
        "tls://ann:hunter2@h:4222",
        creds_file="/secrets/app.creds",
        tls_hostname="nats.internal",
        connect_timeout=0.5,
        reconnect_wait=0.1,
        client_options={"ping_interval": 7},
    )
    with pytest.raises(he.DriverError) as caught:
        await driver.provision([])
    assert "hunter2" not in str(caught.value)
    assert "h:4222" in str(caught.value)
    assert seen["servers"] == ["tls://h:4222"]
    assert (seen["user"], seen["password"]) == ("ann", "hunter2")
    assert seen["user_credentials"] == "/secrets/app.creds"
    assert seen["tls_hostname"] == "nats.internal"
    assert seen["ping_interval"] == 7
    assert seen["max_reconnect_attempts"] == -1
    await driver.close()


header_lines = st.lists(
    st.tuples(st.binary(max_size=12), st.sampled_from([b":", b": ", b"", b":\t"]), st.binary()),
    max_size=8,
)


@given(header_lines)
def test_the_fast_header_parser_agrees_with_nats_py(
    lines: list[tuple[bytes, bytes, bytes]],
) -> None:
    raw = b"\r\n".join(name + sep + value for name, sep, value in lines) + b"\r\n\r\n"
    assert Client._parse_header_lines(raw) == NatsPyClient._parse_header_lines(raw)
