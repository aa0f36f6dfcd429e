"""``emit_many`` seals a generator's events as they come: a batch does not hold them all
(fewer long-lived objects for the garbage collector), and what is sent is the same."""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hexa_event as he
from hexa_event.drivers.memory import MemoryBroker


@dataclass(eq=False)
class Tick:
    n: int


def _connection() -> Any:
    return he.connect(f"memory://streams-{uuid.uuid4().hex}")


async def test_a_generator_s_events_are_not_all_held_at_once() -> None:
    connection = _connection()
    emitter = connection.emitter()
    alive: weakref.WeakSet[Tick] = weakref.WeakSet()
    most_alive = 0

    def events() -> Iterator[he.Event[Tick]]:
        nonlocal most_alive
        for n in range(200):
            most_alive = max(most_alive, len(alive))
            tick = Tick(n)
            alive.add(tick)
            yield he.Event("ticks", f"k{n % 8}", tick)

    ids = await emitter.emit_many(events())
    assert len(ids) == 200
    assert len(set(ids)) == 200
    assert most_alive <= 2, f"{most_alive} events of the batch were held at once"
    await connection.close()


async def test_streamed_and_listed_batches_send_the_same_records() -> None:
    connection = _connection()
    emitter = connection.emitter()
    ctx = he.Context(correlation_id="c-1", locale="fr")
    listed = [he.Event("ticks", f"k{n}", Tick(n), id=f"id-{n}") for n in range(3)]
    await emitter.emit_many(listed, [ctx, ctx, ctx])  # one context per event: the list path
    await emitter.emit_many(
        (he.Event("ticks", f"k{n}", Tick(n), id=f"id-{n}") for n in range(3)), ctx
    )
    assert await emitter.emit_many(iter(())) == []
    broker: MemoryBroker = connection.driver.broker
    stored = sorted((s.record for part in broker.logs["ticks"] for s in part), key=lambda r: r.key)
    assert len(stored) == 6
    for first, second in zip(stored[::2], stored[1::2], strict=True):
        assert first.key == second.key
        assert first.body == second.body
        assert {k: v for k, v in first.headers.items() if k != "HEXA_EVENT_TIME"} == {
            k: v for k, v in second.headers.items() if k != "HEXA_EVENT_TIME"
        }
    await connection.close()
