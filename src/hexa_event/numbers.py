"""One check for every number a user hands the library (options, policies, delays)."""

from __future__ import annotations

import math

from .errors import ConfigurationError


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
    ``maximum``. NaN, infinities and 400-digit integers are refused, not compared."""
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    if ok:
        assert isinstance(value, int | float)
        if isinstance(value, float) and not math.isfinite(value):
            ok = False
        else:
            ok = (value > minimum if above else value >= minimum) and (
                maximum is None or value <= maximum
            )
    if not ok:
        kind = "an integer" if integer else "a finite number"
        low = f"above {minimum:g}" if above else f"from {minimum:g}"
        high = f" to {maximum:g}" if maximum is not None else ""
        raise ConfigurationError(f"{what} must be {kind} {low}{high}, got {value!r}")
