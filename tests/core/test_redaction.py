"""The one set of redaction rules (hexa_event.redaction) and the wire codecs two engines
share (hexa_event.drivers.kit)."""

from __future__ import annotations

import base64
import json

from hexa_event.drivers.kit import goenvelope, textheaders
from hexa_event.drivers.nats import headers as nats_headers
from hexa_event.drivers.pulsar import producer as pulsar_wire
from hexa_event.drivers.stan import protocol as stan_wire
from hexa_event.redaction import (
    is_secret,
    redact,
    redact_text,
    redact_url,
    redact_urls,
    scrubber,
)


def test_secret_names_of_every_engine_are_secret() -> None:
    for name in ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret"):
        assert is_secret(name)  # librdkafka
    for name in ("token", "nkeys_seed", "user_credentials", "authentication"):
        assert is_secret(name)  # NATS, STAN, Pulsar
    for name in ("bootstrap.servers", "linger.ms", "io_threads", "name", "sasl.mechanism"):
        assert not is_secret(name)
    assert redact({"sasl.password": "p", "acks": "all"}) == {"sasl.password": "***", "acks": "all"}


def test_urls_lose_passwords_tokens_and_secret_options() -> None:
    assert redact_url("nats://u:pw@h:4222") == "nats://u:***@h:4222"
    assert redact_url("pulsar://t0k3n@h:6650") == "pulsar://***@h:6650"
    assert redact_url("postgresql://app@h/db") == "postgresql://app@h/db"
    assert redact_url("kafka://h:9092?sasl.password=x&acks=all") == (
        "kafka://h:9092?sasl.password=***&acks=all"
    )
    assert redact_urls("nats://a:1@h1:4222,nats://h2:4222") == "nats://a:***@h1:4222,nats://h2:4222"
    assert redact_text("dial nats://u:pw@h:4222 failed") == "dial nats://***@h:4222 failed"
    scrub = scrubber({"sasl.password": "hunter22", "acks": "all"})
    assert scrub("auth failed for hunter22 (acks all)") == "auth failed for *** (acks all)"


def test_stan_and_pulsar_speak_one_go_envelope() -> None:
    headers = {"_payload_encoder": b"json", "bin": b"\xff\x00"}
    go = pulsar_wire.to_go_body(headers, b'{"a":1}')
    assert (
        go
        == stan_wire.encode_body("", headers, b'{"a":1}')
        == goenvelope.encode("", headers, b'{"a":1}')
    )
    assert json.loads(go) == {
        "header": {k: base64.b64encode(v).decode() for k, v in headers.items()},
        "payload": base64.b64encode(b'{"a":1}').decode(),
    }
    assert pulsar_wire.from_go_body(go) == (headers, b'{"a":1}')
    assert stan_wire.decode_body(go) == ("", headers, b'{"a":1}')
    for foreign in (b"plain bytes", b'{"other": "json"}', b"{broken"):
        assert pulsar_wire.from_go_body(foreign) is None
        assert stan_wire.decode_body(foreign) == ("", {}, foreign)


def test_nats_and_pulsar_text_headers_round_trip_any_bytes() -> None:
    headers = {"text": b"plain", "bin": b"\xff\x00", "crlf": b"a\r\nb"}
    props = pulsar_wire.to_properties(headers)
    assert props["text"] == "plain"
    assert props[pulsar_wire.B64_PROPERTY] == "bin"
    assert pulsar_wire.from_properties({**props, pulsar_wire.NOT_BEFORE_PROPERTY: "1"}) == headers
    raw = nats_headers.encode("k\xe9y", headers, "id-1")
    assert raw["text"] == "plain"
    assert raw[nats_headers.BASE64] == "bin,crlf"
    assert nats_headers.decode(raw) == ("k\xe9y", headers, None)
    listed = textheaders.encode([("x", b"\x80")], listed_in="L")
    assert listed == {"x": "gA==", "L": "x"}
    assert textheaders.decode({**listed, "y": "not base64!"}, listed_in="L") == {
        "x": b"\x80",
        "y": b"not base64!",
    }
