"""Writes: a batch of NATS messages written as one command arrives as ``publish`` sends them
(on the shared STAN server's NATS port)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import nats
import pytest

from hexa_event.drivers.stan.writes import Writes, pub_head
from hexa_event_services import require_service

pytestmark = pytest.mark.stan


async def _write_and_receive(*, wrapped: bool) -> tuple[list[tuple[str, str, bytes]], Any]:
    require_service("stan")
    nc = await nats.connect(os.environ.get("HEXA_STAN_URL", "nats://127.0.0.1:4223"))
    prefix = f"writes.{uuid.uuid4().hex[:8]}"
    sent = [
        (f"{prefix}.a", "", b""),
        (f"{prefix}.b", f"_INBOX.{prefix}.r1", b"with\r\nPUB x 3\r\n inside"),
        (f"{prefix}.a", f"_INBOX.{prefix}.r22", bytes(range(256)) * 40),
        (f"{prefix}.c", "", b"last"),
    ]
    got: list[tuple[str, str, bytes]] = []
    done = asyncio.Event()

    async def receive(msg: Any) -> None:
        got.append((msg.subject, msg.reply, msg.data))
        if len(got) == len(sent):
            done.set()

    await nc.subscribe(f"{prefix}.>", cb=receive)
    seen: list[str] = []
    if wrapped:  # instrumentation (or a test) wrapping publish must see every message
        publish = nc.publish

        async def counting(subject: str, payload: bytes = b"", **kwargs: Any) -> None:
            seen.append(subject)
            await publish(subject, payload, **kwargs)

        nc.publish = counting  # type: ignore[method-assign]
    writes = Writes(nc)
    for subject, reply, data in sent:
        writes.add(pub_head(subject, reply), data)
    out_msgs = nc.stats["out_msgs"]
    await writes.flush()
    assert nc.stats["out_msgs"] == out_msgs + len(sent)
    assert not writes.parts  # flushed once: a second flush writes nothing
    await writes.flush()
    async with asyncio.timeout(10):
        await done.wait()
    await nc.close()
    assert got == sent
    return got, seen


async def test_a_batch_arrives_as_sent() -> None:
    _, seen = await _write_and_receive(wrapped=False)
    assert seen == []


async def test_a_wrapped_publish_sees_every_message() -> None:
    got, seen = await _write_and_receive(wrapped=True)
    assert seen == [subject for subject, _, _ in got]
