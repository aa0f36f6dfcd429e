"""A record's headers as the message properties the driver builds, without a broker: the
binding's ``send_async`` is replaced by a stand-in that keeps each built message and
confirms it. ASCII headers (and any the sealer vouched for as UTF-8) go to the message
builder as bytes, the rest as text or base64; the properties are the same either way."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pulsar
import pytest

import hexa_event as he
from hexa_event.driver import PairHeaders, RawRecord, SealedRecords
from hexa_event.drivers.pulsar import PulsarDriver
from hexa_event.drivers.pulsar.producer import (
    B64_PROPERTY,
    NOT_BEFORE_PROPERTY,
    message_properties,
    to_properties,
)
from hexa_event.emitter import Emitter
from hexa_event.envelope import Envelope

TOPIC = "properties-test"


class Sent:
    """The messages the stand-in was handed, confirmed at once."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def __call__(self, message: Any, callback: Any) -> None:
        self.messages.append(message)
        callback(pulsar.Result.Ok, None)

    def properties(self) -> list[dict[str, str]]:
        return [message.properties() for message in self.messages]


@pytest.fixture
async def driver() -> AsyncIterator[tuple[PulsarDriver, Sent]]:
    made = PulsarDriver(service_url="pulsar://127.0.0.1:1", provision=False)
    made.channels[TOPIC] = 0  # provisioned: nothing is asked of a broker
    sent = Sent()
    made._producers._senders[TOPIC] = sent
    yield made, sent
    await made.close()


def _record(headers: Any, not_before: float = 0.0) -> RawRecord:
    return RawRecord(TOPIC, "k", headers, b"{}", not_before)


async def test_properties_are_the_headers_text_whichever_way_they_are_built(
    driver: tuple[PulsarDriver, Sent],
) -> None:
    pulsar_driver, sent = driver
    cases: list[dict[str, bytes]] = [
        {"a": b"ascii", "b": b""},
        {"a": b"ascii", "utf8": "caf\xe9".encode()},
        {"a": b"ascii", "bin": b"\xff\x00"},
        {},
    ]
    await pulsar_driver.publish([_record(dict(headers)) for headers in cases])
    assert sent.properties() == [to_properties(headers) for headers in cases]
    assert sent.properties()[2] == {"a": "ascii", "bin": "/wA=", B64_PROPERTY: "bin"}
    # Headers as pairs (a delivery forwarded as it came) are no dict: made into text.
    pairs = PairHeaders([("a", b"1"), ("b", b"\xfe")])
    await pulsar_driver.publish([_record(pairs)])
    assert sent.properties()[-1] == {"a": "1", "b": "/g==", B64_PROPERTY: "b"}


def test_only_an_ascii_dict_goes_as_it_is() -> None:
    ascii_headers = {"a": b"1", "b": b"two"}
    assert message_properties(ascii_headers) is ascii_headers
    utf8 = {"a": "\xe9".encode()}
    assert message_properties(utf8) == {"a": "\xe9"}
    assert message_properties(PairHeaders([("a", b"1")])) == {"a": "1"}


async def test_a_delayed_record_carries_its_not_before_and_its_headers_stay_as_they_were(
    driver: tuple[PulsarDriver, Sent],
) -> None:
    pulsar_driver, sent = driver
    headers = {"a": b"ascii"}
    due = time.time() + 3600
    await pulsar_driver.publish([_record(headers, due), _record(headers)])
    delayed, at_once = sent.properties()
    assert delayed == {"a": "ascii", NOT_BEFORE_PROPERTY: str(int(due * 1000))}
    assert at_once == {"a": "ascii"}
    assert headers == {"a": b"ascii"}  # the record's own headers are not the properties'


async def test_an_emitters_records_give_the_properties_their_headers_read_as_text(
    driver: tuple[PulsarDriver, Sent],
) -> None:
    pulsar_driver, sent = driver
    emitter = Emitter(pulsar_driver)
    events = [
        he.Event(TOPIC, "k", {"n": 1}, headers={"tenant": "acm\xe9"}),
        he.Event(TOPIC, "k", {"n": 2}, headers={"raw": b"\xff"}),
    ]
    await emitter.emit_many(events[:1])  # UTF-8 throughout: vouched for by the sealer
    await emitter.emit_many(events)  # not UTF-8 throughout: each record looked at
    properties = sent.properties()
    assert properties[0]["tenant"] == properties[1]["tenant"] == "acm\xe9"
    assert properties[2]["raw"] == "/w=="
    assert properties[2][B64_PROPERTY] == "raw"
    assert B64_PROPERTY not in properties[1]


async def test_a_sealed_list_changed_afterwards_is_read_value_by_value(
    driver: tuple[PulsarDriver, Sent],
) -> None:
    """What the sealer said of its list holds only for the driver it was handed to."""
    pulsar_driver, sent = driver
    records = Envelope().seal_many([he.Event(TOPIC, "k", {"n": 1})])
    assert type(records) is SealedRecords
    assert records.text
    records[0].headers["late"] = "\xe9t\xe9".encode("latin-1")  # type: ignore[index]
    await pulsar_driver.publish(records)  # nobody vouched for it: every value looked at
    (properties,) = sent.properties()
    assert properties["late"] == "6XTp"
    assert properties[B64_PROPERTY] == "late"
