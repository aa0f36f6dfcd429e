"""Dead letters as data: header constants, a reader decoding the original type, poison too."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import hexa_event as he
from hexa_event import headers as h
from hexa_event.testing import Collector, eventually


@dataclass
class Order:
    id: int


async def test_a_dead_letter_reader_gets_reason_error_attempts_and_source() -> None:
    conn = he.connect(f"memory://{uuid.uuid4().hex}")
    receiver = conn.receiver("svc")

    @receiver.subscribe(
        "orders",
        action="charge",
        payload=Order,
        retry=he.RetryPolicy(max_retries=2, initial_delay=0.01),
    )
    async def charge(ctx: he.Context, msg: he.Message[Order]) -> None:
        raise RuntimeError(f"card declined for {msg.payload.id}")

    letters = Collector()
    reader_calls = Collector()

    @he.subscribe_dead_letters(receiver, "charge", payload=Order)
    async def alert(ctx: he.Context, letter: he.DeadLetter[Order]) -> None:
        reader_calls.add(letter.event_id)
        if len(reader_calls) == 1:
            raise RuntimeError("pager down")  # retried in place, never dead-lettered
        letters.add(letter)

    async with receiver:
        emitter = conn.emitter()
        event_id = await emitter.emit(he.Event("orders", "k1", Order(7)))
        await emitter.emit(he.Event("orders", "k2", b"\xff not json", codec="raw"))
        await letters.wait_for(2, within=30)
        reader = receiver.subscriptions["charge.dlq-reader"]
        await eventually(lambda: reader.counters.handled == 2, within=10)
        assert reader.counters.dead_lettered == 0
    await conn.close()

    by_key = {letter.key: letter for letter in letters.items}
    failed = by_key["k1"]
    assert failed.payload == Order(7)
    assert failed.decode_error == ""
    assert failed.event_id == event_id
    assert failed.reason == h.REASON_EXHAUSTED
    assert failed.error_type == "RuntimeError"
    assert failed.error_message == "card declined for 7"
    assert failed.attempts == 3
    assert failed.source_channel == "orders"
    assert failed.source_coordinates
    assert failed.action == "charge"
    assert failed.channel == "charge.dlq"
    assert failed.emitted_at is not None
    assert failed.headers[h.DEAD_LETTER_REASON] == b"retries-exhausted"

    poison = by_key["k2"]
    assert poison.reason == h.REASON_POISON
    assert poison.payload is None
    assert poison.decode_error
    assert poison.body == b"\xff not json"
    assert poison.attempts == 1


def test_header_constants_are_the_wire_names() -> None:
    assert h.ATTEMPT == "HEXA_ATTEMPT"
    assert h.DEAD_LETTER_REASON == "HEXA_DEAD_LETTER_REASON"
    assert h.EVENT_ID == he.HEXA_EVENT_ID
    assert h.TRACEPARENT == "traceparent"
    assert {h.REASON_POISON, h.REASON_PERMANENT, h.REASON_EXHAUSTED} == {
        "poison",
        "permanent-error",
        "retries-exhausted",
    }
    assert he.headers is h
