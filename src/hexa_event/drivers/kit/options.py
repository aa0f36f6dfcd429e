"""Checks of the mappings an options class passes through to its client unchanged
(librdkafka settings, ``pulsar.Client`` keywords, ``nats.connect`` arguments...)."""

from __future__ import annotations

from collections.abc import Mapping

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
