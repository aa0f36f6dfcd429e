"""Go hexa-event's JSON envelope (STAN, Pulsar in Go mode): ``{"header": {name: base64},
"payload": base64}`` plus our optional top-level ``"key"``, which Go ignores (records from
Go have the empty key); docs/engines/stan.md and pulsar.md, "Go compatibility"."""

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


def encode(key: str, headers: Mapping[str, bytes], body: bytes) -> bytes:
    """The JSON envelope for one record (``key`` only when not empty)."""
    # A record's headers are a dict as a rule: encoded as they are, not copied.
    header = headers if isinstance(headers, dict) else dict(headers)
    return _encoder.encode(GoEnvelope(header or None, body, key))


def decode(data: bytes) -> tuple[str, Mapping[str, bytes], bytes] | None:
    """``(key, headers, payload)`` of an envelope; None when ``data`` is not one (another
    publisher's bytes, some other JSON document: the driver hands the body over as is)."""
    if data[:1] != b"{":
        return None
    try:
        envelope = _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):  # (a document nested thousands deep)
        return None
    if envelope.payload is None and envelope.header is None:
        return None  # some other JSON document
    return envelope.key, envelope.header or {}, envelope.payload or b""
