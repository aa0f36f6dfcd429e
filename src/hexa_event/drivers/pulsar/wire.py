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

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping

NOT_BEFORE_PROPERTY = "hexa.not_before"
"""On delayed records: the not-before time (epoch ms). Pulsar may deliver a delayed message
up to one tick (1 s by default) early; the consumer hands such a message back until then."""
B64_PROPERTY = "hexa.b64"
"""Names (comma-separated) of properties whose values are base64 of non-text header bytes."""


def to_properties(headers: Mapping[str, bytes]) -> dict[str, str]:
    """Headers as Pulsar message properties (text), reversibly."""
    props: dict[str, str] = {}
    binary: list[str] = []
    for name, value in headers.items():
        try:
            props[name] = value.decode()
        except UnicodeDecodeError:
            props[name] = base64.b64encode(value).decode()
            binary.append(name)
    if binary:
        props[B64_PROPERTY] = ",".join(binary)
    return props


def from_properties(props: Mapping[str, str]) -> dict[str, bytes]:
    """The inverse of :func:`to_properties`."""
    headers = {name: value.encode() for name, value in props.items()}
    if NOT_BEFORE_PROPERTY not in props and B64_PROPERTY not in props:
        return headers  # the common case: text headers, no delay
    headers.pop(NOT_BEFORE_PROPERTY, None)
    listed = headers.pop(B64_PROPERTY, None)
    if listed:
        for name in listed.decode().split(","):
            if name in headers:
                with contextlib.suppress(binascii.Error, ValueError):  # else keep the text
                    headers[name] = base64.b64decode(headers[name], validate=True)
    return headers


def to_go_body(headers: Mapping[str, bytes], body: bytes) -> bytes:
    """Go hexa-event's JSON envelope around ``body`` and ``headers``."""
    envelope = {
        "header": {name: base64.b64encode(value).decode() for name, value in headers.items()},
        "payload": base64.b64encode(body).decode(),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def from_go_body(data: bytes) -> tuple[dict[str, bytes], bytes] | None:
    """Headers and body out of a Go envelope, or None when ``data`` is not one."""
    if not data.startswith(b"{"):
        return None
    try:
        envelope = json.loads(data)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str):
            return None
        raw_headers = envelope.get("header") or {}
        if not isinstance(raw_headers, dict):
            return None
        headers = {
            str(name): base64.b64decode(value, validate=True)
            for name, value in raw_headers.items()
            if isinstance(value, str)
        }
        return headers, base64.b64decode(envelope["payload"], validate=True)
    except (ValueError, binascii.Error):
        return None
