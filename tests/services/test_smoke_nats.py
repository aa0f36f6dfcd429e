"""nats-server with JetStream: a stream, a publish acknowledged by it, a pull consumer."""

from __future__ import annotations

import pytest

from hexa_event_services import unique_name as unique

pytestmark = pytest.mark.nats

nats = pytest.importorskip("nats")


async def test_jetstream_round_trip(nats_url: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = nc.jetstream(timeout=10)
        stream = unique("SMOKE").replace("-", "_")
        subject = f"smoke.{stream}"
        await js.add_stream(name=stream, subjects=[subject])
        try:
            ack = await js.publish(subject, b"hello", headers={"Nats-Msg-Id": "m1"})
            assert (ack.stream, ack.seq) == (stream, 1)
            dup = await js.publish(subject, b"hello", headers={"Nats-Msg-Id": "m1"})
            assert dup.duplicate

            sub = await js.pull_subscribe(subject, durable="smoke", stream=stream)
            msgs = await sub.fetch(1, timeout=10)
            assert [m.data for m in msgs] == [b"hello"]
            await msgs[0].ack_sync(timeout=10)
            info = await js.consumer_info(stream, "smoke")
            assert info.num_ack_pending == 0
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()
