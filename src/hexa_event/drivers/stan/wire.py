"""The body of a STAN message: Go hexa-event's JSON envelope (:mod:`..kit.goenvelope`), the
record's key as its top-level ``"key"`` (STAN has no headers). A body that is not such an
envelope (a plain STAN publisher's) comes back whole, with no headers: a foreign record.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..kit import goenvelope
from ..kit.goenvelope import encode as encode_body

__all__ = ["decode_body", "encode_body"]


def decode_body(data: bytes) -> tuple[str, Mapping[str, bytes], bytes]:
    """``(key, headers, payload)`` of a message body; a foreign body comes back whole."""
    return goenvelope.decode(data) or ("", {}, data)
