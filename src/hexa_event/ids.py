"""Event identifiers: UUIDv7 strings, time-ordered, assigned by the producer."""

from __future__ import annotations

from uuid_utils import uuid7


def new_event_id() -> str:
    """A new UUIDv7 as its canonical 36-character string (``str(uuid7())``)."""
    return str(uuid7())
