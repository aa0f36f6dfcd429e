"""The consumers-per-stream limit (issue 23): a partitioned action is a consumer per
partition, so actions x partitions must fit the stream's ``max_consumers`` (-1: the
server's default, 1,000 on nats-server 2.15). A subscribe beyond it fails naming the limit
and the stream setting that raises it, and that setting, passed as
``NatsOptions(stream_config={'max_consumers': N})``, raises it on the existing stream."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats_helpers import TEST_OPTIONS

import hexa_event as he
from hexa_event.errors import DriverError


async def _api(nc: Client, subject: str) -> dict[str, Any]:
    reply = await nc.request(f"$JS.API.{subject}", b"", timeout=5)
    data: dict[str, Any] = json.loads(reply.data)
    return data


@pytest.fixture
async def layout(nats_server: str) -> AsyncIterator[dict[str, Any]]:
    """A partitioned stream of the test's own (2 partitions), deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    options = {
        **TEST_OPTIONS,
        "stream": f"HEXA_TEST_MC_{tag}",
        "subject_prefix": f"hexa-test-mc-{tag}",
        "partitions": 2,
    }
    yield options
    nc = Client()
    await nc.connect(nats_server)
    await _api(nc, f"STREAM.DELETE.{options['stream']}")
    await _api(nc, f"STREAM.DELETE.KV_{options['stream']}_members")
    await nc.close()


async def _handle(ctx: he.Context, msg: he.Message[Any]) -> None:
    del ctx, msg


def _receiver(conn: he.Connection, channel: str, actions: int) -> he.Receiver:
    receiver = conn.receiver("mc")
    for n in range(actions):
        receiver.subscribe(channel, action=f"act-{n}", handler=_handle)
    return receiver


async def test_a_subscribe_over_the_limit_names_it_and_the_setting_raises_it(
    nats_server: str, layout: dict[str, Any]
) -> None:
    channel = "limited"
    small = he.connect(nats_server, **layout, stream_config={"max_consumers": 3})
    await small.provision([channel])
    with pytest.raises(DriverError) as refused:
        async with _receiver(small, channel, actions=2):  # 2 x 2 consumers: one too many
            pass
    await small.close()
    message = str(refused.value)
    assert "holds 3 consumers, its limit max_consumers=3" in message, message
    assert "stream_config={'max_consumers': N}" in message, message
    assert "actions x partitions" in message, message

    # The setting the error names raises the limit of the existing stream.
    raised = he.connect(nats_server, **layout, stream_config={"max_consumers": 10})
    async with _receiver(raised, channel, actions=2):
        pass
    await raised.close()
    nc = Client()
    await nc.connect(nats_server)
    info = await _api(nc, f"STREAM.INFO.{layout['stream']}")
    await nc.close()
    assert info["config"]["max_consumers"] == 10
    assert info["state"]["consumer_count"] == 4
