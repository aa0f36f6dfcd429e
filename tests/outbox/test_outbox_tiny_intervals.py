"""An interval so short it is no pause (1e-300 s) is refused naming the option: the relay
polled, sampled its backlog, and a cleaner cleaned, without pause, taking a core and the
database's time while it looked healthy. A millisecond is the shortest taken."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from db_helpers import RecordingDriver
from hexa_event.errors import ConfigurationError
from hexa_event.inbox import InboxCleaner
from hexa_event.outbox import OutboxCleaner, OutboxRelay

TINY = [1e-300, 5e-324, 0.0009]


@pytest.mark.parametrize("tiny", TINY, ids=repr)
@pytest.mark.parametrize("option", ["poll_interval", "stats_interval"])
def test_the_relay_refuses_an_interval_that_is_no_pause(
    tmp_path: Path, option: str, tiny: float
) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    with pytest.raises(ConfigurationError, match=option):
        OutboxRelay(db, RecordingDriver(), **{option: tiny})


@pytest.mark.parametrize("tiny", TINY, ids=repr)
@pytest.mark.parametrize("cleaner", [OutboxCleaner, InboxCleaner])
def test_the_cleaners_refuse_an_interval_that_is_no_pause(
    tmp_path: Path, cleaner: Any, tiny: float
) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    with pytest.raises(ConfigurationError, match=f"{cleaner.__name__}: interval must be"):
        cleaner(db, interval=tiny)


async def test_a_millisecond_is_taken(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    relay = OutboxRelay(db, RecordingDriver(), poll_interval=0.001, stats_interval=0.001)
    await relay.close()
    for cleaner in (OutboxCleaner, InboxCleaner):
        await cleaner(db, interval=0.001).close()
