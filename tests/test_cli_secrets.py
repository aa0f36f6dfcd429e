"""Secrets in URLs never printed: a password holding characters ``urlsplit`` ends the host
at, a URL without its scheme, and the driver URL of the operator commands in their errors
and debug logs."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import pytest

import hexa_event as he
from hexa_event.cli import main
from hexa_event.redaction import redact_url, scrub, url_secrets

SECRET = "s3cr"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cr#t@db/app", "postgresql://app:***@db/app"),
        ("postgresql://app:s3cr?t@db:5432/app", "postgresql://app:***@db:5432/app"),
        (
            "postgresql://app:s3cr/t@db/app?sslpassword=x",
            "postgresql://app:***@db/app?sslpassword=***",
        ),
        ("postgresql://app:s3cr@x#y@db/app", "postgresql://app:***@db/app"),
        ("kafka://u:s3cr#t@h:9092", "kafka://u:***@h:9092"),
        ("nats://s3cr#t@h:4222", "nats://***@h:4222"),
    ],
)
def test_a_password_holding_url_delimiters_is_hidden(url: str, shown: str) -> None:
    """``urlsplit`` ends the host at an unencoded ``#``, ``?`` or ``/`` of a password, so the
    URL came back unchanged, password and all (SQLAlchemy reads such a URL and connects)."""
    assert redact_url(url) == shown
    assert SECRET not in scrub(f"failed: {url}", url_secrets(url))


@pytest.mark.parametrize(
    "url",
    [
        "kafka://b1:9092,b2:9092?sasl.username=alice@corp&acks=all",
        "postgresql://db:5432/app?user=alice@corp",
        "sqlite:///data/x@y.db",
        "postgresql://app@db/app",
        "pulsar://[::1]:6650?listener=a@b",
    ],
)
def test_an_at_sign_outside_the_user_part_is_left_alone(url: str) -> None:
    assert redact_url(url) == url
    assert url_secrets(url) == []


def test_migrate_never_prints_a_password_the_url_parser_refuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The SQL driver refuses a password with an unencoded ``#`` (it reads a port ``s3cr``)
    and its message, through redact_url, showed the password."""
    code = main(["outbox", "migrate", "--db", "postgresql://app:s3cr#t@127.0.0.1:1/app"])
    assert code == 2  # a URL to fix: bad usage
    err = capsys.readouterr().err
    assert "hexa-event: error:" in err
    assert SECRET not in err


def test_connect_never_echoes_a_password_of_a_url_without_scheme() -> None:
    with pytest.raises(he.ConfigurationError) as refused:
        he.connect("user:s3cret@kafka-1:9092")
    assert "s3cret" not in str(refused.value)
    assert "kafka-1:9092" in str(refused.value)


def test_errors_of_the_operator_commands_hide_the_url_secrets(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``main`` scrubbed ``--db`` and ``--to`` only: a driver error quoting the URL of
    ``tail``/``dlq``/``doctor`` (or ``$HEXA_EVENT_URL``) printed its password."""

    def factory(url: str, **options: Any) -> Any:
        raise RuntimeError(f"cannot reach {url} (the password was s3cr3tpw)")

    monkeypatch.setattr(importlib.import_module("hexa_event.connect"), "_REGISTERED", {})
    he.register_driver("leaky", factory)
    assert main(["tail", "leaky://u:s3cr3tpw@h:1", "orders"]) == 1
    err = capsys.readouterr().err
    assert "s3cr3tpw" not in err
    assert "leaky://u:***@h:1" in err

    monkeypatch.setenv("HEXA_EVENT_URL", "leaky://u:s3cr3tpw@h:1")
    caplog.set_level(logging.DEBUG, logger="hexa_event.cli")
    assert main(["--log-level", "DEBUG", "dlq", "list", "--action", "a"]) == 1
    err = capsys.readouterr().err
    assert "s3cr3tpw" not in err
    assert "RuntimeError" in caplog.text  # the traceback, for --log-level DEBUG
    assert "s3cr3tpw" not in caplog.text


def test_doctor_never_prints_a_password_holding_a_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its first line showed the URL as redact_url left it: unchanged, password and all; and
    it checked the host ``app`` (urlsplit's reading) instead of 127.0.0.1."""
    code = main(["doctor", "postgresql://app:s3cr#t@127.0.0.1:1/app", "--timeout", "2"])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "doctor: postgresql://app:***@127.0.0.1:1/app (postgresql)" in out
    assert "reach 127.0.0.1:1" in out
    assert SECRET not in out
