"""The relay's numeric options, checked when it is made: an absurd one (0, negative, NaN,
a float where a count is due, 400 digits) is refused naming the option, where it would fail
every claim, or every batch, while the relay looked alive."""

from __future__ import annotations

import math

from .._sql.cleaner import SHORTEST_INTERVAL
from ..errors import ConfigurationError
from ..numbers import check_number, shown
from .stats import MAX_LIMIT, check_limit

MAX_SECONDS = MAX_LIMIT // 1000
"""The longest lease, retry delay and poll interval: PostgreSQL's
``idle_in_transaction_session_timeout`` (the lock mode's lease) is whole milliseconds in a
32-bit integer, where 0 means no timeout at all."""


def _count(value: object) -> bool:
    """A whole number from 1 to :data:`MAX_LIMIT` (never a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_LIMIT


def _seconds(value: object, low: float, *, above: bool = False) -> bool:
    """A finite number from ``low`` (exclusive when ``above``) to :data:`MAX_SECONDS`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return (value > low if above else value >= low) and value <= MAX_SECONDS


def check_relay_options(
    *,
    batch_size: object,
    concurrency: object,
    pipeline: object,
    lease: object,
    retry_delay: object,
    poll_interval: object,
    unhealthy_after: object,
    stats_interval: object,
    backlog_limit: object,
    max_unsent_age: object,
) -> None:
    """Raise :class:`ConfigurationError` naming the first option out of its range."""
    check_number("OutboxRelay unhealthy_after", unhealthy_after, above=True)
    check_number("OutboxRelay stats_interval", stats_interval, minimum=SHORTEST_INTERVAL)
    check_limit("OutboxRelay backlog_limit", backlog_limit)
    if max_unsent_age is not None:
        check_number("OutboxRelay max_unsent_age", max_unsent_age, above=True)
    if not _count(batch_size):
        raise ConfigurationError(
            f"batch_size must be 1 to {MAX_LIMIT} (a whole number), got {shown(batch_size)}"
        )
    if not (_count(concurrency) and _count(pipeline)):
        raise ConfigurationError(
            "concurrency and pipeline must be whole numbers from 1 to "
            f"{MAX_LIMIT}, got {shown(concurrency)}, {shown(pipeline)}"
        )
    if not (
        _seconds(lease, 0.001)
        and _seconds(retry_delay, 0)
        and _seconds(poll_interval, SHORTEST_INTERVAL)
    ):
        raise ConfigurationError(
            f"lease and poll_interval must be from {SHORTEST_INTERVAL:g} s and retry_delay not "
            f"negative, each at most {MAX_SECONDS:.0f} s (about 24 days); got "
            f"lease={shown(lease)}, retry_delay={shown(retry_delay)}, "
            f"poll_interval={shown(poll_interval)}"
        )
