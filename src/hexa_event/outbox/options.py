"""The relay's numeric options, checked when it is made: an absurd one is refused naming the
option, where it would fail every claim while the relay looked alive."""

from __future__ import annotations

from ..errors import ConfigurationError
from ..numbers import check_number
from .stats import MAX_LIMIT

MAX_SECONDS = MAX_LIMIT // 1000
"""The longest lease, retry delay and poll interval: PostgreSQL's
``idle_in_transaction_session_timeout`` (the lock mode's lease) is whole milliseconds in a
32-bit integer, where 0 means no timeout at all."""


def check_relay_options(
    *,
    batch_size: int,
    concurrency: int,
    pipeline: int,
    lease: float,
    retry_delay: float,
    poll_interval: float,
    unhealthy_after: float,
    stats_interval: float,
    backlog_limit: int,
    max_unsent_age: float | None,
) -> None:
    """Raise :class:`ConfigurationError` naming the first option out of its range."""
    check_number("OutboxRelay unhealthy_after", unhealthy_after, above=True)
    check_number("OutboxRelay stats_interval", stats_interval, above=True)
    check_number(
        "OutboxRelay backlog_limit", backlog_limit, minimum=1, maximum=MAX_LIMIT, integer=True
    )
    if max_unsent_age is not None:
        check_number("OutboxRelay max_unsent_age", max_unsent_age, above=True)
    if not 1 <= batch_size <= MAX_LIMIT:
        raise ConfigurationError(f"batch_size must be 1 to {MAX_LIMIT}, got {batch_size}")
    if concurrency < 1 or pipeline < 1:
        raise ConfigurationError(
            f"concurrency and pipeline must be at least 1, got {concurrency}, {pipeline}"
        )
    # Written so that NaN fails too.
    if not (
        0.001 <= lease <= MAX_SECONDS
        and 0 <= retry_delay <= MAX_SECONDS
        and 0 < poll_interval <= MAX_SECONDS
    ):
        raise ConfigurationError(
            "lease (from 0.001 s) and poll_interval must be positive and retry_delay not "
            f"negative, each at most {MAX_SECONDS:.0f} s (about 24 days); got "
            f"lease={lease!r}, retry_delay={retry_delay!r}, poll_interval={poll_interval!r}"
        )
