"""Shared CLI test helpers: run a command in-process, whether a channel exists, the
on-call round trip every broker driver passes (publish, tail, a dead letter, dlq list and
replay), and doctor's finding on a group that records wait for."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event.cli import build_parser
from hexa_event.commands import invoke
from hexa_event.driver import SubscriptionSpec
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


async def doctor_on_a_waiting_group(
    url: str, capsys: pytest.CaptureFixture[str], kind: str, settle_one: bool = False
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``doctor --json``'s finding on a group (``kind`` names it: ``group``,
    ``subscription``, ``consumer``) that three records wait for on a channel of its own:
    while a member is subscribed (nothing settled), then once the member left (having acked
    the first record with ``settle_one``). Returns the channel and the two findings."""
    suffix = uuid.uuid4().hex[:8]
    channel, action = f"dr-{suffix}", f"dr-act-{suffix}"
    doctor = ("doctor", url, "--channel", channel, "--action", action, "--json")

    async def finding() -> dict[str, Any]:
        assert await cli(*doctor) == 0
        checks = json.loads(capsys.readouterr().out)["checks"]
        found: dict[str, Any] = next(c for c in checks if c["name"] == f"{kind} {action}")
        return found

    conn = he.connect(url)
    try:
        await conn.emitter().emit_many([he.Event(channel, f"k{n}", {"n": n}) for n in range(3)])
        sub = await conn.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
        try:
            live = await finding()
            if settle_one:
                (delivery,) = await asyncio.wait_for(sub.fetch(1), 30)
                delivery.ack()
                await sub.settle([delivery])
        finally:
            await sub.close()
        gone = await finding()
    finally:
        await conn.close()
    return channel, live, gone
