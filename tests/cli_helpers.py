"""Shared CLI test helpers: run a command in-process, whether a channel exists, and the
on-call round trip every broker driver passes (publish, tail, a dead letter, dlq list and
replay)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

import hexa_event as he
from hexa_event.cli import build_parser
from hexa_event.commands import invoke
from hexa_event.testing import Collector, eventually


async def cli(*argv: str) -> int:
    """``hexa-event ARGV...`` in this process; its exit code."""
    return await invoke(build_parser().parse_args(list(argv)))


def channel_exists(url: str, channel: str) -> bool:
    """Whether ``channel`` exists on the broker at ``url``, as the driver's diagnosis says
    (from synchronous tests: runs its own event loop)."""

    async def look() -> bool:
        conn = he.connect(url)
        try:
            findings = await conn.driver.diagnose([channel], [])
        finally:
            await conn.close()
        (finding,) = [f for f in findings if f.name.endswith(channel)]
        return not finding.detail.startswith("missing")

    return asyncio.run(look())


async def publish_tail_and_dlq_round_trip(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """publish, tail it back, make a dead letter, list it, replay it to the channel."""
    suffix = uuid.uuid4().hex[:8]
    channel, action = f"ops-{suffix}", f"ops-charge-{suffix}"
    assert await cli("publish", url, channel, "--key", "k", "--data", '{"n": 1}') == 0
    capsys.readouterr()
    assert await cli("tail", url, channel, "--from-beginning", "-n", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["body"] == {"n": 1}

    conn = he.connect(url)
    receiver = conn.receiver("svc")
    receiver.subscribe(
        channel,
        action=action,
        retry=he.NO_RETRIES,
        handler=lambda c, m: (_ for _ in ()).throw(TimeoutError("down")),
    )
    async with receiver:
        info = receiver.subscriptions[action]
        await eventually(lambda: info.counters.dead_lettered == 1, within=60)
    await conn.close()

    args = ("--action", action, "--idle", "5")
    assert await cli("dlq", "list", url, *args, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["reason"] for row in listed] == ["retries-exhausted"]
    got = Collector()
    audit = he.connect(url)
    reader = audit.receiver("audit")
    reader.subscribe(channel, action=f"audit-{suffix}", handler=got.add_message)
    async with reader:
        assert await cli("dlq", "replay", url, *args) == 0
        assert "replayed 1 dead letters" in capsys.readouterr().out
        await got.wait_for(2, within=60)  # the original and the replayed copy
    await audit.close()
