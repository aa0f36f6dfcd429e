"""Direct delivery (``drivers/stan/direct.py``): a NATS subscription's messages reach a plain
function from nats-py's read loop, in order, nothing left pending, as bytes before nats-py
builds a message of them (headers and all through nats-py's own way); a handler that
raises is logged and the connection goes on; where the handover is not possible a task
feeds the function (on the shared STAN server's NATS port)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any

import nats
import pytest

from hexa_event.drivers.stan import direct
from hexa_event.testing.waiting import eventually
from hexa_event_services import require_service

pytestmark = pytest.mark.stan


async def _connect() -> Any:
    require_service("stan")
    return await nats.connect(os.environ.get("HEXA_STAN_URL", "nats://127.0.0.1:4223"))


async def _send_and_receive(
    count: int, caplog: pytest.LogCaptureFixture
) -> tuple[list[bytes], Any, Any]:
    nc = await _connect()
    subject = f"direct.{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []
    tasks: list[asyncio.Task[Any] | None] = []

    def handle(data: bytes, headers: dict[str, str] | None) -> None:
        tasks.append(asyncio.current_task())
        if data == b"raise":
            raise ValueError("the handler failed")
        got.append(data)

    sub = await direct.subscribe(nc, subject, handle)
    with caplog.at_level(logging.ERROR, logger=direct.__name__):
        await nc.publish(subject, b"raise")
        for n in range(count):
            await nc.publish(subject, b"%d" % n)
        await eventually(lambda: len(got) == count, within=30, what="every message handled")
    assert got == [b"%d" % n for n in range(count)]  # in order, the one after the raise too
    assert nc.is_connected
    assert "the handler failed" in caplog.text
    return got, sub, (nc, tasks)


async def test_messages_reach_the_function_in_order_and_nothing_stays_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, sub, (nc, tasks) = await _send_and_receive(2000, caplog)
    # Handed over as read: no queue behind the subscription, no task of its own.
    assert (sub.pending_msgs, sub.pending_bytes) == (0, 0)
    assert {id(task) for task in tasks} == {id(nc._reading_task)}  # the connection's reader
    await sub.unsubscribe()
    await nc.close()


async def test_a_subscription_without_the_handover_is_fed_by_a_task(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "can_hand_over", lambda sub: False)
    _, sub, (nc, tasks) = await _send_and_receive(200, caplog)
    assert tasks[0] is not nc._reading_task
    await sub.unsubscribe()
    await nc.close()


async def test_messages_skip_nats_py_message_objects_and_headers_still_arrive(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = await _connect()
    built = 0
    build = nc._build_message

    def counting_build(*args: Any) -> Any:
        nonlocal built
        built += 1
        return build(*args)

    monkeypatch.setattr(nc, "_build_message", counting_build)
    subject = f"direct.{uuid.uuid4().hex[:8]}"
    got: list[tuple[bytes, dict[str, str] | None]] = []
    sub = await direct.subscribe(nc, subject, lambda data, headers: got.append((data, headers)))
    for n in range(100):
        await nc.publish(subject, b"%d" % n)
    await nc.publish(subject, b"with", headers={"h": "v"})
    await eventually(lambda: len(got) == 101, within=30, what="every message handled")
    assert got[:100] == [(b"%d" % n, None) for n in range(100)]
    data, headers = got[100]
    assert data == b"with"
    assert headers is not None
    assert headers["h"] == "v"
    assert built == 1  # the one with headers went nats-py's way
    assert (sub.delivered, nc.stats["in_msgs"]) == (101, 101)

    await sub.unsubscribe()  # nothing reaches the handler after
    other = await direct.subscribe(nc, f"{subject}.other", lambda data, headers: None)
    await nc.publish(subject, b"late")
    await nc.publish(f"{subject}.other", b"x")
    await eventually(lambda: other.delivered == 1, within=30, what="a message after")
    assert len(got) == 101
    await nc.close()
