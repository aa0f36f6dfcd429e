"""The cleaners' shared base checks its ``interval`` with the shared number checks, as its
subclasses do: it checked ``not interval > 0``, which took 400 digits (``run()`` then died
of OverflowError at its first pause) and raised TypeError on a text."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hexa_event._sql.cleaner import BatchCleaner
from hexa_event.errors import ConfigurationError
from hexa_event.outbox import outbox_table


@pytest.mark.parametrize(
    "bad", [10**400, "60", math.nan, 0, -1.0, True], ids=lambda v: repr(v)[:12]
)
def test_the_base_cleaner_refuses_an_interval_asyncio_cannot_wait(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="BatchCleaner: interval must be positive"):
        BatchCleaner(
            f"sqlite:///{tmp_path / 'app.db'}",
            table=outbox_table,
            retention=timedelta(days=1),
            interval=bad,
        )
