"""Retry policy and the names of an action's retry and dead-letter channels."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigurationError
from .numbers import check_number

_MAX_RETRIES = 1000
_MAX_SECONDS = 365 * 24 * 3600.0


def retry_channel(action: str, retry_number: int) -> str:
    """``<action>.retry.<n>``: where the n-th retry of ``action`` waits (as in Go)."""
    return f"{action}.retry.{retry_number}"


def dead_letter_channel(action: str) -> str:
    """``<action>.dlq``: where ``action``'s dead letters go (as in Go)."""
    return f"{action}.dlq"


def retry_prefix(action: str) -> str:
    """``<action>.retry.``: what every retry channel of ``action`` starts with."""
    return f"{action}.retry."


def retry_number_of(channel: str, action: str) -> int:
    """n for ``<action>.retry.<n>`` (n >= 1, at most six digits), else 0."""
    return retry_number_after(channel, retry_prefix(action))


def retry_number_after(channel: str, prefix: str) -> int:
    """:func:`retry_number_of` with the action's :func:`retry_prefix` made once (the
    receiver asks it of every delivery)."""
    if channel.startswith(prefix):
        suffix = channel[len(prefix) :]
        if len(suffix) <= 6 and suffix.isascii() and suffix.isdigit():
            return int(suffix)
    return 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how late a failed handler runs again.

    The handler runs at most ``1 + max_retries`` times. Retry n waits
    ``min(initial_delay * coefficient ** (n - 1), max_delay)`` seconds; ``max_delay``
    defaults to 100 x ``initial_delay``. The defaults are Go hexa-event's: 1 s, x2, 4 retries.

    By default a failed event leaves its key's order for the action's retry channel (as in Go
    hexa-event). With ``in_place=True`` it is retried where it is, holding back only later
    events of the same key, for handlers that need strict order.
    """

    max_retries: int = 4
    initial_delay: float = 1.0
    coefficient: float = 2.0
    max_delay: float | None = None
    in_place: bool = False

    def __post_init__(self) -> None:
        check_number(
            "RetryPolicy.max_retries", self.max_retries, maximum=_MAX_RETRIES, integer=True
        )
        check_number("RetryPolicy.initial_delay", self.initial_delay, maximum=_MAX_SECONDS)
        check_number("RetryPolicy.coefficient", self.coefficient, minimum=1, maximum=_MAX_SECONDS)
        if self.max_delay is not None:
            check_number("RetryPolicy.max_delay", self.max_delay, maximum=_MAX_SECONDS)
        if not isinstance(self.in_place, bool):
            raise ConfigurationError("RetryPolicy.in_place must be True or False")

    @property
    def delay_cap(self) -> float:
        return self.max_delay if self.max_delay is not None else 100 * self.initial_delay

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        if retry_number < 1:
            return 0.0
        exponent = min(retry_number - 1, 64)
        try:
            delay = self.initial_delay * self.coefficient**exponent
        except OverflowError:
            delay = math.inf
        return float(min(delay, self.delay_cap))


NO_RETRIES = RetryPolicy(max_retries=0)
