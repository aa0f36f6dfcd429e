"""``hexa-event dlq replay`` on the SQL driver (a URL two processes can share)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hexa_event as he
from hexa_event.cli import main
from hexa_event.testing import Collector, eventually


async def test_dlq_replay_command_republishes_to_the_source_channel(
    tmp_path: Path, capsys: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    driver = he.connect(url)
    receiver = driver.receiver("svc")
    receiver.subscribe(
        "orders",
        action="export",
        retry=he.NO_RETRIES,
        handler=lambda c, m: (_ for _ in ()).throw(RuntimeError("down")),
    )
    async with receiver:
        await driver.emitter().emit(he.Event("orders", "k", {"n": 1}))
        info = receiver.subscriptions["export"]
        await eventually(lambda: info.counters.dead_lettered == 1, within=20, what="dead letter")
    await driver.close()

    import asyncio

    code = await asyncio.to_thread(
        main, ["dlq", "replay", "--url", url, "--action", "export", "--idle", "0.5"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "replayed 1 dead letters of export (1 to orders), skipped 0" in out

    driver = he.connect(url)
    got = Collector()
    again = driver.receiver("svc")
    again.subscribe("orders", action="audit", handler=lambda c, m: got.add(m.payload))
    async with again:
        # A new action reads the channel from the start: the original and the replayed copy.
        assert await got.wait_for(2, within=20) == [{"n": 1}, {"n": 1}]
    await driver.close()
