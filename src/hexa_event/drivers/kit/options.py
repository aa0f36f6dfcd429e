"""The checks every options class makes of its fields, each naming the owner and the field:
the mappings passed through to a client unchanged (librdkafka settings, ``pulsar.Client``
keywords, ``nats.connect`` arguments...), a choice among fixed values, a non-empty name, a
count (numbers with a unit are :func:`hexa_event.numbers.check_number`'s)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...errors import ConfigurationError


def check_mapping(
    owner: str,
    name: str,
    value: object,
    owned: Mapping[str, str] | None = None,
    *,
    what: str = "client settings",
) -> None:
    """Refuse ``value`` unless it is a mapping of non-empty text keys, none of them one the
    driver sets itself (``owned``: key -> why, or what to set instead)."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{owner}.{name} must be a mapping of {what}, got {type(value).__name__}"
        )
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"{owner}.{name} has a bad key {key!r}")
        if owned and key in owned:
            raise ConfigurationError(f"{owner}.{name}: do not set {key!r}: {owned[key]}")


def check_choice(
    owner: str, name: str, value: object, choices: Sequence[object], hint: str = ""
) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (``hint``: what to pick, appended)."""
    if value in choices:
        return
    listed = [repr(choice) for choice in choices]
    allowed = " or ".join(listed) if len(listed) == 2 else "one of " + ", ".join(listed)
    raise ConfigurationError(f"{owner}.{name} must be {allowed}, got {value!r}{hint}")


def check_name(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is a non-empty string (or None, when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{owner}.{name} must be a non-empty string, got {value!r}")


def check_count(
    owner: str,
    name: str,
    value: object,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    unlimited: int | None = None,
    meaning: str = "no limit",
) -> None:
    """Refuse ``value`` unless it is an integer (never a bool) from ``minimum`` to
    ``maximum``, or the ``unlimited`` value (-1, say), which means ``meaning``."""
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value == unlimited or (minimum <= value and (maximum is None or value <= maximum)))
    ):
        return
    bound = f"from {minimum}" + (f" to {maximum}" if maximum is not None else "")
    extra = f" (or {unlimited}: {meaning})" if unlimited is not None else ""
    raise ConfigurationError(f"{owner}.{name} must be an integer {bound}{extra}, got {value!r}")
