"""``he.log_errors``: a failing handler is logged with the event's identity, then re-raised,
whatever its exception's text or the record's key holds."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import hexa_event as he


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _message(key: str) -> he.Message[Any]:
    return he.Message("ev-1", "orders", key, {"n": 1}, {}, 1, None)


@pytest.mark.parametrize(
    ("exc", "key", "shown"),
    [
        (ValueError("bad order"), "k1", "key=k1 attempt=1 correlation_id=c error=ValueError: "),
        (_UnprintableError(), "k1", "error=_UnprintableError: "),
        # A Kafka key that is not UTF-8 comes as lone surrogates; its bytes show escaped.
        (ValueError("x"), b"\xfe\xff-k".decode("utf-8", "surrogateescape"), "key=\\xfe\\xff-k "),
    ],
)
async def test_a_failure_is_logged_once_and_raised_again(
    caplog: pytest.LogCaptureFixture, exc: Exception, key: str, shown: str
) -> None:
    async def handler(ctx: he.Context, msg: he.Message[Any]) -> None:
        raise exc

    logged = he.log_errors(handler)
    ctx = he.Context(correlation_id="c", handler_action="bill")
    with caplog.at_level(logging.WARNING, logger="hexa_event.middleware"), pytest.raises(type(exc)):
        await logged(ctx, _message(key))
    (record,) = [r for r in caplog.records if r.name == "hexa_event.middleware"]
    text = record.getMessage()  # raised for an exception whose str() raises
    assert text.startswith("handler failed: action=bill event_id=ev-1 channel=orders "), text
    assert shown in text, text
    text.encode("utf-8")  # a UTF-8 log handler can write it
