"""How a record's headers and body ride on a Pulsar message: native (headers as text
properties, non-text values base64 and listed in ``hexa.b64``) or Go hexa-event's JSON
envelope (``body="go"``; a Go-mode consumer reads native messages too)."""

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
