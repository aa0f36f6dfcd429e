"""The Pulsar driver under the public face: receivers of one action, and dead-letter replay."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event.cli import main
from hexa_event.drivers.pulsar import PulsarSubscriptionOptions, SubscriptionType
from hexa_event.errors import SubscriptionBusyError
from hexa_event.testing import Collector, eventually

pytestmark = pytest.mark.pulsar


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"rc-{tag}", f"act-{tag}"


def url_of(pulsar_url: str, admin_url: str) -> str:
    return f"{pulsar_url}?admin_url={admin_url}"


async def test_two_receivers_share_an_action_and_an_exclusive_third_is_refused(
    pulsar_url: str, admin_url: str
) -> None:
    channel, action = names()
    url = url_of(pulsar_url, admin_url)
    connections = [he.connect(url) for _ in range(4)]
    handled: dict[str, Collector] = {"a": Collector(), "b": Collector()}
    receivers = []
    try:
        await connections[0].provision([channel])
        for name, connection in zip("ab", connections[1:3], strict=True):
            receiver = connection.receiver(f"svc-{name}")
            sink = handled[name]
            receiver.subscribe(channel, action=action, handler=lambda c, m, s=sink: s.add(m.id))
            await receiver.start()
            receivers.append(receiver)
        third = connections[3].receiver("svc-c")
        third.subscribe(
            channel,
            action=action,
            handler=lambda c, m: None,
            options=PulsarSubscriptionOptions(type=SubscriptionType.EXCLUSIVE),
        )
        with pytest.raises(SubscriptionBusyError) as refused:
            await third.start()
        text = str(refused.value)
        assert f"'{action}' (Exclusive)" in text
        assert "KEY_SHARED" in text
        assert "PulsarSubscriptionOptions(name=...)" in text

        emitter = connections[0].emitter()
        ids = set(await emitter.emit_many(he.Event(channel, f"k{n}", {"n": n}) for n in range(300)))
        await eventually(
            lambda: set(handled["a"].items) | set(handled["b"].items) >= ids,
            within=60,
            what="every event handled by one of the two",
        )
        assert handled["a"].items
        assert handled["b"].items
        assert not set(handled["a"].items) & set(handled["b"].items)
    finally:
        for receiver in receivers:
            await receiver.close()
        for connection in connections:
            await connection.close()


async def test_dlq_replay_command_works_on_pulsar(
    pulsar_url: str, admin_url: str, capsys: Any
) -> None:
    channel, action = names()
    url = url_of(pulsar_url, admin_url)
    connection = he.connect(url)
    receiver = connection.receiver("svc")

    def broken(ctx: he.Context, msg: he.Message[Any]) -> None:
        raise RuntimeError("down")

    receiver.subscribe(channel, action=action, retry=he.NO_RETRIES, handler=broken)
    async with receiver:
        await connection.emitter().emit(he.Event(channel, "k", {"n": 1}))
        info = receiver.subscriptions[action]
        await eventually(lambda: info.counters.dead_lettered == 1, within=60, what="dead letter")
    await connection.close()

    code = await asyncio.to_thread(
        main, ["dlq", "replay", "--url", url, "--action", action, "--idle", "3"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"replayed 1 dead letters of {action} (1 to {channel}), skipped 0" in out

    connection = he.connect(url)
    got = Collector()
    again = connection.receiver("svc")
    again.subscribe(channel, action=f"{action}-audit", handler=lambda c, m: got.add(m.payload))
    async with again:
        # A new action reads the channel from the start: the original and the replayed copy.
        assert await got.wait_for(2, within=60) == [{"n": 1}, {"n": 1}]
    await connection.close()
