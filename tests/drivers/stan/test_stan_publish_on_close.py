"""A publish waiting for room in the PubAck window when the session ends (the driver
closed, or the connection closed for good) raises the session's failure at once: it writes
no PubMsg after the end, and does not wait ``ack_timeout`` for PubAcks that cannot come."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hexa_event.drivers.stan.options import StanOptions
from hexa_event.drivers.stan.protocol import ConnectResponse
from hexa_event.drivers.stan.session import StanSession
from hexa_event.errors import ClosedError


class _Client:
    """A connected NATS client that writes every message and never answers one."""

    max_payload = 1 << 20
    is_connected = False  # close() sends no CloseRequest through it
    last_error = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def publish(self, subject: str, payload: bytes = b"", **_: Any) -> None:
        await asyncio.sleep(0)
        self.sent.append(payload)


@pytest.mark.parametrize("end", ["close", "connection closed for good"])
async def test_a_publish_waiting_for_room_ends_with_the_session(end: str) -> None:
    nc = _Client()
    options = StanOptions(cluster_id="test-cluster", client_id="c1", max_pub_acks_inflight=1)
    session = StanSession(options, nc)  # type: ignore[arg-type]
    session.response = ConnectResponse(pub_prefix="_STAN.pub.x")
    session.ack_subject = "_STAN.acks.x"
    first = await session.publish([("ch", b"first")])  # fills the window: no PubAck comes
    waiting = asyncio.create_task(session.publish([("ch", b"later")]))
    await asyncio.sleep(0)  # the second call runs to its wait for room (no await before)
    assert not waiting.done()
    if end == "close":
        await session.close()
    else:
        await session._on_closed()
    assert session.failure is not None
    assert isinstance(first.results[0], type(session.failure))
    async with asyncio.timeout(10):
        with pytest.raises(type(session.failure)):
            await waiting
    assert [payload for payload in nc.sent if b"later" in payload] == []
    assert session._acks == {}
    if end == "close":
        assert isinstance(session.failure, ClosedError)
