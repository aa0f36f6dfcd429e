"""Helpers of the Kafka record-batch tests (single handlers fed record batches); they emit
and read again with ``attack_helpers.emit`` and ``attack_helpers.read_again``."""

from __future__ import annotations

import uuid


def names(prefix: str) -> tuple[str, str]:
    """A fresh topic and action (the same name), starting with ``prefix``."""
    tag = uuid.uuid4().hex[:10]
    return f"{prefix}-{tag}", f"{prefix}-{tag}"
