"""A receiver on NATS Streaming attacked on the real server: bodies no emitter of ours
writes (published through the raw protocol: not Go's envelope, a truncated envelope, one
with payload or header values that are not base64, garbage in our own headers, an empty
body) amid ours, with single and batch handlers. Every record ends handled once or
dead-lettered (found on the dead-letter channel), ours keep their key's order, and the
receiver goes on; the driver closed under a running receiver fails it at once."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from stan_helpers import monitor_url, unique

import hexa_event as he
from attack_helpers import (
    driver_closed_under_receiver,
    emit,
    garbage_round,
    hanging_handler_round,
    read_again,
)
from hexa_event import envelope as env
from hexa_event.drivers.stan import StanDriver
from hexa_event.drivers.stan.protocol import (
    PubAck,
    encode_pub_channel,
    encode_pub_head,
    encode_pub_msg,
)

pytestmark = pytest.mark.stan


@pytest.fixture
async def driver(stan_url: str) -> AsyncIterator[StanDriver]:
    made = StanDriver.from_url(stan_url, monitor_url=monitor_url())  # (for the lag)
    yield made
    await made.close()


async def _publish_raw(driver: StanDriver, channel: str, bodies: list[bytes]) -> None:
    """Publish ``bodies`` in order as they are, through the raw STAN protocol."""
    await driver.session.start()  # connects (once)
    session = driver.session
    assert session.nc is not None
    head = encode_pub_head(session.client_id, session.conn_id)
    for body in bodies:
        guid = uuid.uuid4().hex.encode()
        frame = encode_pub_msg(head, guid, encode_pub_channel(channel), body)
        reply = await session.nc.request(
            f"{session.response.pub_prefix}.{channel}", frame, timeout=30
        )
        assert PubAck.decode(reply.data).error == ""


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _envelope(n: int, key: str, garbage: dict[str, Any] | None = None) -> bytes:
    """Go's envelope of the event ``{"n": n}`` with our headers, ``garbage`` in place of
    some (base64 text, or raw JSON values when not text)."""
    header: dict[str, Any] = {
        env.EVENT_ID: _b64(f"id-{n}-{uuid.uuid4().hex}".encode()),
        env.EVENT_TIME: _b64(str(int(time.time() * 1000)).encode()),
        env.CONTENT_TYPE: _b64(b"application/json"),
        env.PAYLOAD_ENCODER: _b64(b"json"),
    }
    header.update(garbage or {})
    body = {"header": header, "payload": _b64(json.dumps({"n": n}).encode()), "key": key}
    return json.dumps(body).encode()


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
async def test_garbage_bodies_amid_ours_are_each_handled_once_or_dead_lettered(
    driver: StanDriver, batch: bool
) -> None:
    """Bodies the core can read are handled once (a body that is not an envelope comes
    whole, keyless; a nonsense emit time is replaced by the server's); the others are
    dead-lettered as poison and found on the dead-letter channel; ours around them are
    handled once, in their key's order; the receiver goes on."""
    channel = action = unique("sta")
    numbers = iter(range(1000))
    readable: dict[int, str] = {}  # n -> what it is
    poison: dict[int, str] = {}
    bodies: list[bytes] = []

    def ours(count: int) -> None:
        for _ in range(count):
            n = next(numbers)
            readable[n] = "ours"
            bodies.append(_envelope(n, f"k{n % 3}"))

    def odd(what: str, body: bytes | None = None, handled: bool = True, **garbage: Any) -> None:
        n = next(numbers)
        (readable if handled else poison)[n] = what
        if body is None:
            body = _envelope(n, f"o{n}", garbage)
        bodies.append(body.replace(b"{N}", str(n).encode()))

    ours(10)
    odd("plain json", b'{"n": {N}}')
    odd("time 400 digits", **{env.EVENT_TIME: _b64(b"9" * 400)})
    odd("time NaN", **{env.EVENT_TIME: _b64(b"NaN")})
    odd("time -5", **{env.EVENT_TIME: _b64(b"-5")})
    odd("header not base64", **{"x-bad": "%%%"})  # the whole body: a JSON document
    odd("attempt abc, other action", **{env.ATTEMPT: _b64(b"abc")})
    odd("deliver-at 1900", **{env.DELIVER_AT: _b64(b"-2208988800000")})
    odd("hundreds", **{f"x-{i}": _b64(str(i).encode()) for i in range(300)})
    ours(5)
    root = env.ROOT_ACTION
    odd("empty", b"", handled=False)
    odd("truncated", _envelope(0, "p1")[:40], handled=False)
    odd("not json", b"\xff\xfe{not json", handled=False)
    odd("id not utf-8", handled=False, **{env.EVENT_ID: _b64(b"\xff\xfe")})
    odd("attempt abc", handled=False, **{env.ATTEMPT: _b64(b"abc"), root: _b64(action.encode())})
    odd(
        "attempt 10**30",
        handled=False,
        **{env.ATTEMPT: _b64(str(10**30).encode()), root: _b64(action.encode())},
    )
    odd("payload not json", b'{"header":{},"payload":"' + _b64(b"{nope").encode() + b'"}', False)
    ours(20)

    def number(msg: he.Message[Any]) -> int:
        payload = msg.payload
        if "n" not in payload:  # a JSON document that is no envelope of ours, whole
            payload = json.loads(base64.b64decode(payload["payload"]))
        return int(payload["n"])

    await _publish_raw(driver, channel, bodies)
    seen, _ = await garbage_round(driver, channel, action, batch, readable, len(poison), number)
    assert seen["plain json"][0].key == ""
    now = time.time()
    for what in ("time 400 digits", "time NaN", "time -5"):
        stamp = seen[what][0].timestamp
        assert stamp is not None, what  # the server's time stands in
        assert abs(stamp.timestamp() - now) < 600, (what, stamp)


@pytest.mark.parametrize("mode", ["async", "sync", "batch"])
async def test_a_hanging_handler_is_reported_and_close_gives_back_exactly_its_records(
    driver: StanDriver, mode: str
) -> None:
    """A handler that hangs on one key: the others are handled, health says the action
    stalls, naming it, close returns in bounded time (the drain cut at drain_timeout) and
    the next receiver of the group gets exactly the records not handled, in order."""
    channel = action = unique("sth")
    await hanging_handler_round(driver, channel, action, mode, emit, read_again)


async def test_the_driver_closed_under_a_running_receiver(driver: StanDriver) -> None:
    """The driver closed while handlers run, some of them handling their record after
    that: the receiver closes itself at once (no settlement can be written any more; it
    does not retry them until its close gives up), says why, and health is unhealthy."""
    channel = action = unique("stc")
    await emit(driver, channel, [(f"k{n % 3}", n) for n in range(20)])
    await driver_closed_under_receiver(driver, channel, action)
