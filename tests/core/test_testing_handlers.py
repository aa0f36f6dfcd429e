"""hexa_event.testing: call a subscribed handler directly, capture what it emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import hexa_event as he
from hexa_event.testing import EmitCapture, build_context, call_handler


@dataclass
class Order:
    id: int
    total: float


def make_receiver(emitter: he.Emitter, seen: list[Any]) -> he.Receiver:
    receiver = he.connect("memory://unused-by-unit-tests").receiver("shop")

    @receiver.subscribe("orders", action="billing.invoice", payload=Order)
    async def invoice(ctx: he.Context, msg: he.Message[Order]) -> None:
        seen.append((ctx.dedup_keys, msg))
        if msg.payload.total < 0:
            raise he.PermanentError("negative total")
        await emitter.emit(he.Event("invoices", msg.key, {"order": msg.payload.id}), ctx)

    return receiver


async def test_call_a_subscribed_handler_with_dedup_keys_and_capture_its_emits() -> None:
    capture = EmitCapture()
    seen: list[Any] = []
    receiver = make_receiver(capture.emitter(), seen)
    ctx = he.Context(correlation_id="corr-1", user=he.User(id="u1"))

    msg = await call_handler(
        receiver, {"id": 42, "total": 9.5}, action="billing.invoice", ctx=ctx, key="o-42"
    )

    keys, got = seen[0]
    assert got.payload == Order(42, 9.5)  # plain data converted to the subscribed type
    assert got.channel == "orders"
    assert keys == {
        he.HEXA_EVENT_ID: msg.id,
        he.HEXA_EVENT_HANDLER_ACTION_NAME: "billing.invoice",
        he.HEXA_ROOT_EVENT_ID: msg.id,
        he.HEXA_ROOT_EVENT_HANDLER_ACTION_NAME: "billing.invoice",
    }
    assert capture.payloads("invoices") == [{"order": 42}]
    emitted = capture.on("invoices")[0]
    assert emitted.key == "o-42"
    assert emitted.context.correlation_id == "corr-1"
    assert emitted.context.user == he.User(id="u1")


async def test_handler_errors_propagate_and_failing_emits_can_be_simulated() -> None:
    capture = EmitCapture()
    receiver = make_receiver(capture.emitter(), [])
    with pytest.raises(he.PermanentError, match="negative"):
        await call_handler(receiver, Order(1, -1), action="billing.invoice")
    capture.fail_with = he.DriverError("broker down")
    with pytest.raises(he.DriverError):
        await call_handler(receiver, Order(2, 1), action="billing.invoice")
    assert capture.emitted == []
    with pytest.raises(he.ConfigurationError, match=r"billing\.invoice"):
        await call_handler(receiver, Order(2, 1), action="nope")


async def test_plain_functions_sync_and_async() -> None:
    got: list[Any] = []
    await call_handler(lambda c, m: got.append((c.handler_action, m.payload)), 1, action="a")
    assert got == [("a", 1)]

    async def handler(ctx: he.Context, msg: he.Message[Any]) -> None:
        got.append(ctx.event_id == msg.id)

    await call_handler(handler, {"x": 1})
    assert got[-1] is True
    ctx = build_context("act", event_id="e1", root_event_id="r1", root_action="root")
    assert ctx.dedup_keys[he.HEXA_ROOT_EVENT_HANDLER_ACTION_NAME] == "root"
