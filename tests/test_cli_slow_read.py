"""A slow database is not an empty dead-letter queue.

CI (stop 29) printed ``[]`` for ``dlq list --idle 0.3`` on SQLite with two letters pending:
the idle time also ran while the subscription's first read was still under way, so a read
slower than ``--idle`` ended the scan with nothing. A driver that can tell whether it has
read everything (:meth:`Subscription.caught_up`) is now waited for, within a bound.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import cli
from test_cli_ops import dead_letters


async def test_dlq_list_waits_for_a_read_slower_than_idle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    await dead_letters(url, "charge", [{"n": 0}, {"n": 1}])

    consumer = importlib.import_module("hexa_event.drivers.sql.consumer")
    real = consumer.read_partitions

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.8)  # a loaded machine: each read takes longer than --idle
        return await real(*args, **kwargs)

    monkeypatch.setattr(consumer, "read_partitions", slow)
    assert await cli("dlq", "list", url, "--action", "charge", "--idle", "0.3", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(row["id"] for row in listed) == ["ev-0", "ev-1"]
