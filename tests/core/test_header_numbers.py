"""Times and counts read from headers: only ASCII digits, bounded; anything else is absent.

"²" is what ``str.isdigit`` accepts and ``int`` refuses; 400 digits overflow a float division;
5,000 digits exceed ``int``'s string limit. Before, each raised out of the code that read it:
a reply's receiver, ``hexa-event dlq list``, the NATS and Pulsar consumers.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hexa_event import envelope as env
from hexa_event.commands._records import event_time
from hexa_event.driver import Delivery, RawRecord
from hexa_event.drivers.nats import headers as nats_headers
from hexa_event.numbers import epoch_seconds, whole_number
from hexa_event.replies import _message
from hexa_event.retry import retry_number_after

GARBAGE = ["\u00b2", "\u0663", "9" * 14, "9" * 400, "9" * 5000, "-5", " 5", "1e5", "12a", ""]


@pytest.mark.parametrize("raw", GARBAGE)
def test_garbage_is_absent(raw: str) -> None:
    assert epoch_seconds(raw) is None
    assert epoch_seconds(raw.encode()) is None


def test_milliseconds_are_read() -> None:
    assert epoch_seconds("1733500000123") == 1733500000.123
    assert epoch_seconds(b"0") == 0.0
    assert epoch_seconds(None) is None
    datetime.fromtimestamp(epoch_seconds("9" * 13) or 0, UTC)  # the largest accepted


@pytest.mark.parametrize("raw", GARBAGE)
def test_a_reply_with_a_garbage_time_keeps_the_broker_time(raw: str) -> None:
    headers = {env.EVENT_TIME: raw.encode(), env.EVENT_ID: b"r1"}
    delivery = Delivery(RawRecord("replies", "", headers, b"{}"), coordinates="c", timestamp=7.0)
    message = _message(delivery, None)
    assert message.timestamp == datetime.fromtimestamp(7.0, UTC)


@pytest.mark.parametrize("raw", GARBAGE)
def test_the_cli_prints_the_broker_time_for_a_garbage_time(raw: str) -> None:
    assert event_time({env.EVENT_TIME: raw.encode()}, 7.0) == "1970-01-01T00:00:07.000+00:00"


@pytest.mark.parametrize("raw", GARBAGE)
def test_a_nats_message_with_a_garbage_accepted_time_is_read(raw: str) -> None:
    _key, headers, accepted = nats_headers.decode({nats_headers.ACCEPTED_AT: raw, "a": "b"})
    assert accepted is None
    assert headers == {"a": b"b"}


@pytest.mark.parametrize("suffix", ["\u00b2", "\u0663", "9" * 5000])
def test_a_retry_channel_with_a_unicode_number_is_not_a_retry(suffix: str) -> None:
    assert retry_number_after(f"orders.act.retry.{suffix}", "orders.act.retry.") == 0


@pytest.mark.parametrize(
    ("text", "low", "high", "expected"),
    [
        ("5", 1, 2**53, 5),
        (" +7 ", 1, 2**53, 7),
        ("0", 1, 2**53, None),
        ("0", 0, 65535, 0),
        ("65536", 0, 65535, None),
        ("-1", 0, 65535, None),
        ("\u00b2", 1, 2**53, None),
        ("9" * 100, 1, 2**53, None),
        ("1e3", 1, 2**53, None),
        ("", 1, 2**53, None),
    ],
)
def test_a_command_line_whole_number(text: str, low: int, high: int, expected: int | None) -> None:
    assert whole_number(text, low, high) == expected


def test_a_hundred_digit_batch_size_is_bad_usage() -> None:
    """It passed argparse and failed later with exit 1; now the option is named (exit 2)."""
    import argparse

    from hexa_event.cli import _positive_int

    with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
        _positive_int("9" * 100)
