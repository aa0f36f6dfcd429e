"""Absurd numbers given to the relay and the cleaners are refused when they are made, not
met at every claim or pass (a relay that logs a failed claim forever while liveness says
all is well)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from db_helpers import RecordingDriver
from hexa_event.errors import ConfigurationError
from hexa_event.inbox import InboxCleaner
from hexa_event.outbox import OutboxCleaner, OutboxRelay


@pytest.mark.parametrize(
    "option",
    [
        {"lease": math.nan},
        {"lease": math.inf},
        {"lease": 30 * 86400.0},  # more than the lock mode can hold (PostgreSQL ms in int32)
        {"lease": 0.0004},  # under 1 ms: the lock mode's timeout would be 0, which is none
        {"retry_delay": math.nan},
        {"retry_delay": 1e12},  # past the year 9999
        {"poll_interval": math.nan},
        {"poll_interval": math.inf},
        {"batch_size": 10**400},
    ],
    ids=lambda option: "-".join(f"{k}={v!r}"[:24] for k, v in option.items()),
)
def test_the_relay_refuses_absurd_numbers(tmp_path: Path, option: dict[str, Any]) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    with pytest.raises(ConfigurationError, match=r"at most|must be 1 to"):
        OutboxRelay(db, RecordingDriver(), **option)


@pytest.mark.parametrize("cleaner", [OutboxCleaner, InboxCleaner])
def test_the_cleaners_refuse_a_nan_interval(tmp_path: Path, cleaner: Any) -> None:
    db = f"sqlite:///{tmp_path / 'app.db'}"
    with pytest.raises(ConfigurationError, match="interval must be positive"):
        cleaner(db, interval=math.nan)
