"""The envelope: header names, ids and the body left for non-hexa consumers."""

from __future__ import annotations

import json
import uuid

import pytest

from hexa_event import CloudEvents, Context, Envelope, Event
from hexa_event import envelope as env
from hexa_event.errors import EncodeError, InvalidEventError


def test_sealed_record_carries_go_and_hexa_headers_and_plain_body() -> None:
    record = Envelope().seal(
        Event("orders", "o-1", {"total": 5}, reply_channel="replies", headers={"x": "1"}),
        Context(correlation_id="c", locale="fa"),
    )
    assert record.channel == "orders"
    assert record.key == "o-1"
    assert json.loads(record.body) == {"total": 5}
    h = record.headers
    assert h["_payload_encoder"] == b"json"
    assert h["_reply_channel"] == b"replies"
    assert h["_ctx_correlation_id"] == b"c"
    assert h["content-type"] == b"application/json"
    assert h["x"] == b"1"
    assert uuid.UUID(h[env.EVENT_ID].decode()).version == 7
    assert int(h[env.EVENT_TIME]) > 1_700_000_000_000


def test_given_event_id_is_kept_so_re_emits_are_recognisable() -> None:
    record = Envelope().seal(Event("c", "k", {}, id="fixed-id"))
    assert record.headers[env.EVENT_ID] == b"fixed-id"


def test_event_ids_are_time_ordered() -> None:
    envelope = Envelope()
    ids = [envelope.seal(Event("c", "k", {})).headers[env.EVENT_ID] for _ in range(50)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50


def test_cloudevents_binary_mode_headers() -> None:
    record = Envelope(cloudevents=CloudEvents(source="/billing")).seal(Event("c", "k", {"a": 1}))
    h = record.headers
    assert h["ce_specversion"] == b"1.0"
    assert h["ce_id"] == h[env.EVENT_ID]
    assert h["ce_source"] == b"/billing"
    assert h["ce_type"] == b"dict"
    assert h["ce_time"].startswith(b"20")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channel": "", "key": "k"}, "channel"),
        ({"channel": "c", "key": ""}, "key"),
        ({"channel": 3, "key": "k"}, "channel"),
        ({"channel": "c", "key": "k", "id": ""}, "id"),
        ({"channel": "c", "key": "k", "headers": {"h": 1}}, "headers"),
    ],
)
def test_invalid_events_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidEventError, match=repr(field)):
        Event(payload=None, **kwargs)  # type: ignore[arg-type]


def test_encode_failure_names_the_channel() -> None:
    with pytest.raises(EncodeError, match="'orders'"):
        Envelope(codec="raw").seal(Event("orders", "k", {"not": "bytes"}))
