"""The body of a STAN message: Go hexa-event's JSON envelope.

STAN messages have no headers, so Go hexa-event's ``hestan`` driver sends its RawMessage as
JSON: ``{"header": {name: base64}, "payload": base64}`` (Go encodes ``[]byte`` as standard
base64). We write and read exactly that, so Go and Python services share channels. The
record's key, which Go's envelope has no place for, travels as a top-level ``"key"`` string
that Go's decoder ignores; records from Go have the empty key.

A body that is not such an envelope (a plain STAN publisher's bytes) is handed over as it
is, with no headers: the core then treats it as a foreign record.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class GoEnvelope(msgspec.Struct, omit_defaults=True):
    """``hevent.RawMessage`` as JSON, plus our optional ``key``."""

    header: dict[str, bytes] | None = None
    payload: bytes | None = None
    key: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(GoEnvelope)


def encode_body(key: str, headers: Mapping[str, bytes], body: bytes) -> bytes:
    """The JSON envelope for one record."""
    return _encoder.encode(GoEnvelope(header=dict(headers) or None, payload=body, key=key))


def decode_body(data: bytes) -> tuple[str, Mapping[str, bytes], bytes]:
    """``(key, headers, payload)`` of a message body; a foreign body comes back whole."""
    if data[:1] != b"{":
        return "", {}, data
    try:
        envelope = _decoder.decode(data)
    except msgspec.DecodeError:
        return "", {}, data
    if envelope.payload is None and envelope.header is None:
        return "", {}, data  # some other JSON document
    return envelope.key, envelope.header or {}, envelope.payload or b""
