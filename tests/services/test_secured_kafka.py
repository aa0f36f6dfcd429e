"""The Kafka driver over TLS with SASL/SCRAM, and over mutual TLS, on the ``kafka-secure``
node (a CA and certificates made by ``openssl`` when it starts fresh).

It connects with the typed options and with URL parameters; a wrong password, an unknown CA
and a missing client certificate each fail the first emit with an error that says what is
wrong, within a bound (never a hang), and no secret appears in the error or the logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

import hexa_event
from hexa_event.context import Context
from hexa_event.errors import HexaEventError
from hexa_event.event import Event, Message
from hexa_event_services import Service

pytestmark = [pytest.mark.kafka_secure, pytest.mark.timeout(300)]

WRONG_PASSWORD = "Wr0ng-Pa55word-" + uuid.uuid4().hex[:6]
FAIL_WITHIN = 45.0
"""Seconds a misconfigured connection may take to fail (delivery timeout 15 s + slack)."""


def _sasl_options(svc: Service, mechanism: str = "SCRAM-SHA-512", **over: Any) -> dict[str, Any]:
    options = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_username": svc.username,  # type: ignore[attr-defined]
        "sasl_password": svc.password,  # type: ignore[attr-defined]
        "ssl_ca_location": svc.tls_file("ca.pem"),  # type: ignore[attr-defined]
    }
    options.update(over)
    return options


def _sasl_url(svc: Service, password: str, ca: str = "ca.pem") -> str:
    user = svc.username  # type: ignore[attr-defined]
    return (
        f"kafka://{user}:{quote(password, safe='')}@{svc.url}"
        f"?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-256"
        f"&ssl.ca.location={svc.tls_file(ca)}"  # type: ignore[attr-defined]
    )


def _mtls_options(svc: Service, with_cert: bool = True) -> dict[str, Any]:
    options = {
        "security_protocol": "SSL",
        "ssl_ca_location": svc.tls_file("ca.pem"),  # type: ignore[attr-defined]
    }
    if with_cert:
        options["ssl_certificate_location"] = svc.tls_file("client.pem")  # type: ignore[attr-defined]
        options["ssl_key_location"] = svc.tls_file("client.key")  # type: ignore[attr-defined]
    return options


def _mtls_url(svc: Service) -> str:
    return (
        f"kafka://{svc.mtls_url}?security.protocol=SSL"  # type: ignore[attr-defined]
        f"&ssl.ca.location={svc.tls_file('ca.pem')}"  # type: ignore[attr-defined]
        f"&ssl.certificate.location={svc.tls_file('client.pem')}"  # type: ignore[attr-defined]
        f"&ssl.key.location={svc.tls_file('client.key')}"  # type: ignore[attr-defined]
    )


async def _round_trip(url: str, **options: Any) -> None:
    conn = hexa_event.connect(url, delivery_timeout=30, **options)
    tag = uuid.uuid4().hex[:8]
    channel, action = f"secure-{tag}", f"secure-act-{tag}"
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    receiver = conn.receiver("secure")

    @receiver.subscribe(channel, action=action)
    async def handle(ctx: Context, msg: Message[Any]) -> None:
        if not got.done():
            got.set_result(msg.payload["hello"])

    try:
        await conn.provision([channel])
        async with receiver:
            await conn.emitter().emit(Event(channel, "k", {"hello": tag}))
            assert await asyncio.wait_for(got, 60) == tag
    finally:
        await conn.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
async def test_sasl_scram_over_tls_with_options(kafka_secure: Service, mechanism: str) -> None:
    await _round_trip(f"kafka://{kafka_secure.url}", **_sasl_options(kafka_secure, mechanism))


async def test_sasl_scram_over_tls_with_url_parameters(kafka_secure: Service) -> None:
    await _round_trip(_sasl_url(kafka_secure, kafka_secure.password))  # type: ignore[attr-defined]


async def test_mutual_tls_with_options(kafka_secure: Service) -> None:
    await _round_trip(
        f"kafka://{kafka_secure.mtls_url}",  # type: ignore[attr-defined]
        **_mtls_options(kafka_secure),
    )


async def test_mutual_tls_with_url_parameters(kafka_secure: Service) -> None:
    await _round_trip(_mtls_url(kafka_secure))


def _secrets(svc: Service) -> list[str]:
    return [WRONG_PASSWORD, svc.password]  # type: ignore[attr-defined]


CASES = {
    "wrong password (options)": (
        lambda s: (f"kafka://{s.url}", _sasl_options(s, sasl_password=WRONG_PASSWORD)),
        ("authentication",),
    ),
    "wrong password (URL)": (lambda s: (_sasl_url(s, WRONG_PASSWORD), {}), ("authentication",)),
    "unknown CA": (
        lambda s: (
            f"kafka://{s.url}",
            _sasl_options(s, ssl_ca_location=s.tls_file("other-ca.pem")),
        ),
        ("certificate",),
    ),
    "missing client certificate": (
        lambda s: (f"kafka://{s.mtls_url}", _mtls_options(s, with_cert=False)),
        ("certificate", "handshake", "ssl"),
    ),
}


async def _first_emit_failure(
    svc: Service, case: str, caplog: pytest.LogCaptureFixture
) -> tuple[HexaEventError, float, str]:
    """Connect as ``case`` says, emit once: (the error, seconds it took, the connection's
    repr). Logs are captured at DEBUG so that a secret logged anywhere shows up."""
    url, options = CASES[case][0](svc)
    caplog.set_level(logging.DEBUG)
    conn = hexa_event.connect(url, delivery_timeout=15, **options)
    channel = f"secure-bad-{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    try:
        with pytest.raises(HexaEventError) as failure:
            await asyncio.wait_for(conn.emitter().emit(Event(channel, "k", {"x": 1})), FAIL_WITHIN)
    finally:
        await asyncio.wait_for(conn.close(), 30)
    return failure.value, time.monotonic() - began, repr(conn)


@pytest.mark.parametrize("case", list(CASES))
async def test_misconfigured_connection_fails_fast_without_secrets(
    kafka_secure: Service, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    error, took, conn_repr = await _first_emit_failure(kafka_secure, case, caplog)
    assert took < FAIL_WITHIN, f"{case}: took {took:.1f}s"
    for secret in _secrets(kafka_secure):
        assert secret not in str(error)
        assert secret not in repr(error)
        assert secret not in conn_repr
        assert secret not in caplog.text, f"{case}: a secret reached the logs"


@pytest.mark.parametrize("case", list(CASES))
async def test_misconfigured_connection_error_names_the_cause(
    kafka_secure: Service, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    error, _, _ = await _first_emit_failure(kafka_secure, case, caplog)
    words = CASES[case][1]
    assert any(w in str(error).lower() for w in words), f"{case}: unclear error {error}"
