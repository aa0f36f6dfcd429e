"""nats-streaming-server: the STAN protocol spoken minimally over nats-py.

There is no maintained Python STAN client; STAN is protobuf messages on core NATS subjects
(reference/nats-jetstream-and-stan.md A.3-A.5). This test connects, subscribes, publishes
and waits for the PubAck, receives and acks the message, then closes the session.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from hexa_event_services import pb_decode, pb_field
from hexa_event_services import unique_name as unique

pytestmark = pytest.mark.stan

nats = pytest.importorskip("nats")


async def test_stan_round_trip(stan_endpoint: tuple[str, str]) -> None:
    url, cluster_id = stan_endpoint
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        client_id = unique("smoke")
        hb_inbox = nc.new_inbox()

        async def heartbeat(msg: Any) -> None:
            await nc.publish(msg.reply, b"")

        await nc.subscribe(hb_inbox, cb=heartbeat)
        conn_id = uuid.uuid4().bytes
        connect_req = (
            pb_field(1, client_id)
            + pb_field(2, hb_inbox)
            + pb_field(3, 1)
            + pb_field(4, conn_id)
            + pb_field(5, 5)
            + pb_field(6, 88)
        )
        resp = pb_decode(
            (await nc.request(f"_STAN.discover.{cluster_id}", connect_req, timeout=5)).data
        )
        assert not resp.get(5), resp.get(5)
        pub_prefix, sub_requests = resp[1].decode(), resp[2].decode()
        close_requests = resp[4].decode()

        channel = unique("smoke.channel").replace("-", "_")
        delivered: asyncio.Queue[dict[int, object]] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            await delivered.put(pb_decode(msg.data))

        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_msg)
        sub_req = (
            pb_field(1, client_id)
            + pb_field(2, channel)
            + pb_field(4, inbox)
            + pb_field(5, 16)
            + pb_field(6, 30)
            + pb_field(10, 4)  # StartPosition.First
        )
        sub_resp = pb_decode((await nc.request(sub_requests, sub_req, timeout=5)).data)
        assert not sub_resp.get(3), sub_resp.get(3)
        ack_inbox = sub_resp[2].decode()

        guid = uuid.uuid4().hex
        pub = (
            pb_field(1, client_id)
            + pb_field(2, guid)
            + pb_field(3, channel)
            + pb_field(5, b"hello")
            + pb_field(6, conn_id)
        )
        pub_ack = pb_decode((await nc.request(f"{pub_prefix}.{channel}", pub, timeout=10)).data)
        assert pub_ack.get(1) == guid.encode()
        assert not pub_ack.get(2), pub_ack.get(2)

        got = await asyncio.wait_for(delivered.get(), 10)
        assert (got[1], got[2], got[4]) == (1, channel.encode(), b"hello")
        await nc.publish(ack_inbox, pb_field(1, channel) + pb_field(2, 1))

        close = pb_decode(
            (await nc.request(close_requests, pb_field(1, client_id), timeout=5)).data
        )
        assert not close.get(1), close.get(1)
    finally:
        await nc.close()
