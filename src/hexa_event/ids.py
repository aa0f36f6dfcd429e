"""Event identifiers: UUIDv7 strings, time-ordered, assigned by the producer."""

from __future__ import annotations

import uuid_utils


def new_event_id() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    return str(uuid_utils.uuid7())
