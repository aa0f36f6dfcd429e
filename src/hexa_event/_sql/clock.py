"""The timestamps stored in the tables: UTC datetimes and epoch milliseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every timestamp column holds UTC)."""
    return datetime.now(UTC)


def now_ms() -> int:
    """Milliseconds since the epoch (the SQL driver's ``*_ms`` columns)."""
    return time.time_ns() // 1_000_000


def as_utc(value: datetime) -> datetime:
    """``value`` with UTC attached when the database returned it naive (SQLite)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
