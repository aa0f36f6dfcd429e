"""Helpers of the Kafka record-batch tests (single handlers fed record batches)."""

from __future__ import annotations

import uuid

import hexa_event as he
from hexa_event.drivers.kafka import KafkaDriver
from hexa_event.testing.waiting import eventually


def names(prefix: str) -> tuple[str, str]:
    """A fresh topic and action (the same name), starting with ``prefix``."""
    tag = uuid.uuid4().hex[:10]
    return f"{prefix}-{tag}", f"{prefix}-{tag}"


async def emit(driver: KafkaDriver, topic: str, pairs: list[tuple[str, int]]) -> None:
    """One event ``{"n": n}`` per (key, n), in order."""
    await he.Emitter(driver).emit_many(he.Event(topic, key, {"n": n}) for key, n in pairs)


async def read_again(driver: KafkaDriver, topic: str, action: str, count: int) -> list[int]:
    """What the next member of the group reads: the ``n`` of each event, once ``count`` came
    and the group's lag is 0."""
    again: list[int] = []
    second = he.Receiver(driver, name=action)

    @second.subscribe(topic, action=action)
    async def handle_again(ctx: he.Context, msg: he.Message[dict[str, int]]) -> None:
        again.append(msg.payload["n"])

    async with second:
        await eventually(lambda: len(again) >= count, within=60)
        await eventually(lambda: second.health()["actions"][action]["lag"] == 0, within=30)
    return again
