"""Text no broker can carry (a lone surrogate) is refused when the Event is built, naming the
field and the fix, instead of surfacing later as a driver's UnicodeEncodeError or TypeError."""

from __future__ import annotations

from typing import Any

import pytest

import hexa_event as he
from hexa_event.errors import InvalidEventError
from hexa_event.event import Message


@pytest.mark.parametrize(
    ("kwargs", "field", "shown"),
    [
        ({"key": "order-\ud800"}, "key", "position 6"),
        ({"key": "\udc80"}, "key", "position 0"),
        ({"channel": "ord\udfffers"}, "channel", "position 3"),
        ({"reply_channel": "r\ud83d"}, "reply_channel", "position 1"),
        ({"headers": {"x-\ud800": "v"}}, "headers", "position 2"),
        ({"headers": {"x-tag": "é\udc80"}}, "headers", "header 'x-tag'"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field(
    kwargs: dict[str, Any], field: str, shown: str
) -> None:
    args: dict[str, Any] = {"channel": "orders", "key": "k", "payload": {}} | kwargs
    with pytest.raises(InvalidEventError) as caught:
        he.Event(**args)
    assert caught.value.field == field
    assert shown in str(caught.value)
    assert "lone surrogate" in str(caught.value)
    assert "errors='replace'" in str(caught.value)


def test_real_text_everywhere_is_accepted() -> None:
    event = he.Event(
        "commandes-é", "clé-😀", {}, reply_channel="réponses", headers={"x-näme": "wert-ü"}
    )
    assert event.key == "clé-😀"
    assert he.Event("c", "k", {}, headers={"raw": b"\xff\xfe"}).headers["raw"] == b"\xff\xfe"


async def test_emit_refuses_it_before_the_driver_sees_it() -> None:
    async with he.connect("memory://event-text") as conn:
        with pytest.raises(InvalidEventError, match="'key'"):
            await conn.emitter().emit(he.Event("c", "\ud800", {}))


async def test_a_reply_to_a_key_read_as_raw_bytes_is_sent() -> None:
    """A Kafka key that was not UTF-8 reaches handlers with escaped bytes (surrogates); the
    reply to such a request still goes out (its key only spreads replies over partitions)."""
    conn = he.connect("memory://event-text-reply")
    emitter = conn.emitter()
    request = he.Event("ask", "k", {}, reply_channel="_reply.x")
    msg: Message[dict[str, int]] = Message(
        "e1", "ask", "k\udcff", {}, {}, 1, None, reply_channel=request.reply_channel
    )
    reply_id = await emitter.reply(he.Context(), msg, {"n": 1})
    assert reply_id
    await conn.close()
