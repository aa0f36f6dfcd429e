"""How a record's headers and body ride on a Pulsar message, in both directions.

Native (the default): the body is the record's body; each header is a message property
(Pulsar properties are text). A header value that is not UTF-8 text is sent base64-encoded
and its name listed in the ``hexa.b64`` property, so any bytes survive the round trip.

Go-compatible (``PulsarOptions(body="go")``): the body is Go hexa-event's JSON envelope
``{"header": {name: base64(value)}, "payload": base64(body)}`` and no properties are set,
which is what its Pulsar driver writes and reads. A consumer in Go mode reads native
messages too (a body that is not such an envelope is taken as it is).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..kit import goenvelope, textheaders

NOT_BEFORE_PROPERTY = "hexa.not_before"
"""On delayed records: the not-before time (epoch ms). Pulsar may deliver a delayed message
up to one tick (1 s by default) early; the consumer hands such a message back until then."""
B64_PROPERTY = "hexa.b64"
"""Names (comma-separated) of properties whose values are base64 of non-text header bytes."""


def to_properties(headers: Mapping[str, bytes]) -> dict[str, str]:
    """Headers as Pulsar message properties (text), reversibly."""
    try:  # the common case: every value is UTF-8 text
        return {name: value.decode() for name, value in headers.items()}
    except UnicodeDecodeError:
        return textheaders.encode(headers.items(), listed_in=B64_PROPERTY)


def from_properties(props: Mapping[str, str]) -> dict[str, bytes]:
    """The inverse of :func:`to_properties`."""
    headers = textheaders.decode(props, listed_in=B64_PROPERTY)
    headers.pop(NOT_BEFORE_PROPERTY, None)
    return headers


def to_go_body(headers: Mapping[str, bytes], body: bytes) -> bytes:
    """Go hexa-event's JSON envelope around ``body`` and ``headers``."""
    return goenvelope.encode("", headers, body)


def from_go_body(data: bytes) -> tuple[dict[str, bytes], bytes] | None:
    """Headers and body out of a Go envelope, or None when ``data`` is not one."""
    opened = goenvelope.decode(data)
    return None if opened is None else (dict(opened[1]), opened[2])
