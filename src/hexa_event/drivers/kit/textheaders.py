"""Record headers as text headers (NATS headers, Pulsar message properties), reversibly:
text as it is, any other value base64-encoded with its name listed in one more header
(``HEXA_B64`` on NATS, ``hexa.b64`` on Pulsar)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable, Mapping


def utf8(value: bytes) -> str | None:
    """``value`` as text when it is UTF-8, else None."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def encode(
    items: Iterable[tuple[str, bytes]],
    *,
    listed_in: str,
    text: Callable[[bytes], str | None] = utf8,
    out: dict[str, str] | None = None,
) -> dict[str, str]:
    """``items`` as text headers (into ``out`` when given): ``text(value)`` when it is not
    None, else base64 with the name listed in the header ``listed_in``."""
    out = {} if out is None else out
    encoded: list[str] = []
    for name, value in items:
        shown = text(value)
        if shown is None:
            out[name] = base64.b64encode(value).decode()
            encoded.append(name)
        else:
            out[name] = shown
    if encoded:
        out[listed_in] = ",".join(encoded)
    return out


def decode(
    raw: Mapping[str, str], *, listed_in: str, keep: Callable[[str], bool] | None = None
) -> dict[str, bytes]:
    """The inverse of :func:`encode`: the headers ``keep`` accepts (all by default), the
    listed ones base64-decoded (a value that is not base64 after all stays as it came)."""
    listed = raw.get(listed_in)
    if listed is None and keep is None:  # the common case: text headers only
        return {name: value.encode() for name, value in raw.items()}
    headers = {
        name: value.encode()
        for name, value in raw.items()
        if name != listed_in and (keep is None or keep(name))
    }
    if listed:
        for name in listed.split(","):
            if name in headers:
                with contextlib.suppress(ValueError):  # binascii.Error is a ValueError
                    headers[name] = base64.b64decode(headers[name], validate=True)
    return headers
