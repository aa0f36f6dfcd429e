"""The body of a STAN message: Go hexa-event's JSON envelope
(:mod:`hexa_event.drivers.kit.goenvelope`, shared with the Pulsar driver's Go mode).

STAN messages have no headers, so Go hexa-event's ``hestan`` driver sends its RawMessage as
that envelope; the record's key travels as its top-level ``"key"``. A body that is not such
an envelope (a plain STAN publisher's bytes) is handed over as it is, with no headers: the
core then treats it as a foreign record.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..kit import goenvelope
from ..kit.goenvelope import encode as encode_body

__all__ = ["decode_body", "encode_body"]


def decode_body(data: bytes) -> tuple[str, Mapping[str, bytes], bytes]:
    """``(key, headers, payload)`` of a message body; a foreign body comes back whole."""
    return goenvelope.decode(data) or ("", {}, data)
