"""STAN through the public face: Go hestan's wire format both ways, order within a member,
and the session's problems in the receiver's health."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from typing import Any

import pytest
from stan_helpers import unique

import hexa_event
from hexa_event.context import Context
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.stan import StanDriver, StanSubscriptionOptions
from hexa_event.drivers.stan.protocol import (
    PubAck,
    encode_pub_channel,
    encode_pub_head,
    encode_pub_msg,
)
from hexa_event.event import Event, Message
from hexa_event.testing.waiting import Collector, eventually

pytestmark = pytest.mark.stan

WITHIN = 30.0


async def test_what_we_emit_is_go_hestans_json_envelope(stan_url: str) -> None:
    connection = hexa_event.connect(stan_url)
    driver = connection.driver
    assert isinstance(driver, StanDriver)
    try:
        channel = unique("go-out")
        ctx = Context(correlation_id="corr-1", locale="en-US")
        event_id = await connection.emitter().emit(
            Event(channel, "order-7", {"total": 3}, reply_channel="replies"), ctx
        )
        # Read the channel with a plain subscription, as Go's stan.go client would.
        sub = await driver.subscribe(
            SubscriptionSpec(
                group="raw", channels=(channel,), options=StanSubscriptionOptions(kind="plain")
            )
        )
        [delivery] = await asyncio.wait_for(sub.fetch(1), WITHIN)
        body = json.loads(delivery.native.data)
        header = {k: base64.b64decode(v) for k, v in body["header"].items()}
        assert json.loads(base64.b64decode(body["payload"])) == {"total": 3}
        assert header["_ctx_correlation_id"] == b"corr-1"
        assert header["_ctx_locale"] == b"en-US"
        assert header["_reply_channel"] == b"replies"
        assert header["_payload_encoder"] == b"json"
        assert header["HEXA_EVENT_ID"] == event_id.encode()
        assert body["key"] == "order-7"
    finally:
        await connection.close()


async def test_what_go_emits_reaches_our_handlers(stan_url: str) -> None:
    """A body as Go's hestan emitter publishes it (no key field) through the raw protocol."""
    connection = hexa_event.connect(stan_url)
    driver = connection.driver
    assert isinstance(driver, StanDriver)
    got = Collector()
    channel, action = unique("go-in"), unique("act")
    receiver = connection.receiver("svc")
    receiver.subscribe(channel, action=action, handler=lambda c, m: got.add((c, m)))
    try:
        await receiver.start()
        go_body = json.dumps(
            {
                "header": {
                    "_ctx_correlation_id": base64.b64encode(b"go-corr").decode(),
                    "_ctx_locale": base64.b64encode(b"fa-IR").decode(),
                    "_payload_encoder": base64.b64encode(b"json").decode(),
                    "_reply_channel": "",
                },
                "payload": base64.b64encode(b'{"from":"go"}').decode(),
            }
        ).encode()
        session = driver.session
        assert session.nc is not None
        head = encode_pub_head(session.client_id, session.conn_id)
        frame = encode_pub_msg(head, b"go-guid", encode_pub_channel(channel), go_body)
        reply = await session.nc.request(
            f"{session.response.pub_prefix}.{channel}", frame, timeout=WITHIN
        )
        assert PubAck.decode(reply.data).error == ""
        [(ctx, msg)] = await got.wait_for(1, within=WITHIN)
        assert msg.payload == {"from": "go"}
        assert ctx.correlation_id == "go-corr"
        assert ctx.locale == "fa-IR"
        assert msg.key == ""
        assert msg.id == f"{channel}-1"  # no HEXA_EVENT_ID: the broker's coordinates
    finally:
        await receiver.close()
        await connection.close()


async def test_one_member_handles_each_key_in_order_one_at_a_time(stan_url: str) -> None:
    """What STAN can keep: within one process, a key's events run in order, never at once."""
    emitting, receiving = hexa_event.connect(stan_url), hexa_event.connect(stan_url)
    channel, action = unique("order"), unique("act")
    seen: dict[str, list[int]] = defaultdict(list)
    running: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []

    async def handle(ctx: Context, msg: Message[Any]) -> None:
        running[msg.key] += 1
        if running[msg.key] > 1:
            overlaps.append(msg.key)
        await asyncio.sleep(0.001)
        seen[msg.key].append(msg.payload["seq"])
        running[msg.key] -= 1

    receiver = receiving.receiver("svc", concurrency=32)
    receiver.subscribe(channel, action=action, handler=handle)
    try:
        await receiver.start()
        emitter = emitting.emitter()
        for seq in range(30):
            await emitter.emit_many(Event(channel, f"key-{k}", {"seq": seq}) for k in range(8))
        await eventually(
            lambda: sum(len(v) for v in seen.values()) >= 240, within=WITHIN, what="240 events"
        )
        assert not overlaps
        assert all(seen[f"key-{k}"] == list(range(30)) for k in range(8))
    finally:
        await receiver.close()
        await emitting.close()
        await receiving.close()


async def test_session_problems_show_in_health(private_stan: Any) -> None:
    server = private_stan(store="FILE")
    connection = hexa_event.connect(server.url, ping_interval=1)
    channel, action = unique("health"), unique("act")
    got = Collector()
    receiver = connection.receiver("svc")
    receiver.subscribe(channel, action=action, handler=lambda c, m: got.add(m.id))
    try:
        await receiver.start()
        [state] = receiver.health()["actions"].values()
        assert state["assignment"][0] == f"{channel}:durable queue {action}:{action}"
        server.stop()
        await eventually(
            lambda: not receiver.health()["healthy"], within=WITHIN, what="unhealthy while down"
        )
        assert "NATS connection lost" in json.dumps(receiver.health())
        server.start()
        await connection.emitter().emit(Event(channel, "k", {"n": 1}))
        await got.wait_for(1, within=WITHIN)
        await eventually(lambda: receiver.health()["healthy"], within=WITHIN, what="healthy")
    finally:
        await receiver.close()
        await connection.close()
