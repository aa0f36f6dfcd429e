"""One check for every number a user hands the library (options, policies, delays)."""

from __future__ import annotations

import math

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
        raise ConfigurationError(f"{what} must be {kind} {low}{high}, got {shown(value)}")


def shown(value: object) -> str:
    """``value`` as an error message shows it: its repr, or for an integer past ``LARGEST``
    its length (400 digits are no help to read; past 4,300, ``str`` itself refuses)."""
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) <= LARGEST:
        return repr(value)
    try:
        return f"an integer of {len(str(abs(value)))} digits"
    except ValueError:  # over sys.get_int_max_str_digits()
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"


def duration(seconds: float) -> str:
    """A duration as health and errors show it: whole seconds from 100 s, three digits
    below (a 0.4 s stall_timeout or claim must not read "0s")."""
    return f"{seconds:.0f}s" if seconds >= 100 else f"{seconds:.3g}s"


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
