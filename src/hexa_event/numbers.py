"""One check for every number a user hands the library (options, policies, delays)."""

from __future__ import annotations

import math
import sys

from .errors import ConfigurationError

LARGEST = 2**53
"""The largest magnitude accepted: beyond it an int is no longer exact as a float, and no
count, size or duration needs it (a 400-digit one would raise OverflowError deep inside)."""


def check_number(
    what: str,
    value: object,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
    integer: bool = False,
    above: bool = False,
) -> None:
    """Raise ConfigurationError naming ``what`` unless ``value`` is a finite int or float (an
    int when ``integer``; never a bool) from ``minimum`` (exclusive when ``above``) to
    ``maximum`` (and at most ``LARGEST`` in magnitude). NaN, infinities and 400-digit
    integers are refused, not compared, and named by their length."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        assert isinstance(value, int | float)
        if (
            isinstance(value, float) and not math.isfinite(value)
        ) or not -LARGEST <= value <= LARGEST:
            ok = False
        else:
            ok = (value > minimum if above else value >= minimum) and (
                maximum is None or value <= maximum
            )
    if not ok:
        kind = "an integer" if integer else "a finite number"
        low = f"above {minimum:g}" if above else f"from {minimum:g}"
        high = f" to {maximum:g}" if maximum is not None else f" to {LARGEST:g}"
        shown = (
            f"an integer of {_digits(value)} digits"
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST
            else repr(value)
        )
        raise ConfigurationError(f"{what} must be {kind} {low}{high}, got {shown}")


def _digits(value: int) -> str:
    """How many digits ``value`` has, also past ``int``'s string limit (4300 digits)."""
    try:
        return str(len(str(abs(value))))
    except ValueError:
        return f"more than {sys.get_int_max_str_digits()}"


def epoch_seconds(raw: str | bytes | None) -> float | None:
    """Seconds since the epoch from a header's decimal milliseconds (``HEXA_EVENT_TIME``, a
    not-before time); None when absent or not 1 to 13 ASCII digits (garbage, a Unicode digit
    such as "²" that ``int`` refuses, or a time past the year 2286): the caller's fallback
    stands in. Any result is a valid ``datetime.fromtimestamp`` argument."""
    if not raw or len(raw) > 13 or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw) / 1000


def whole_number(text: str, low: int, high: int = LARGEST) -> int | None:
    """``text`` (a command-line value) as a whole number from ``low`` to ``high``; None when
    it is not one: garbage, a Unicode digit, a negative number, 400 digits, out of range.
    The one rule behind the command line's counts, ports and workers."""
    text = text.strip().removeprefix("+")
    if not text or len(text) > 16 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if low <= value <= high else None
