"""Record headers as text headers (NATS headers, Pulsar message properties), reversibly:
text as it is, any other value base64-encoded with its name listed in one more header
(``HEXA_B64`` on NATS, ``hexa.b64`` on Pulsar)."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence


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


EMITTED = (
    "_ctx_correlation_id",
    "_ctx_locale",
    "_ctx_user",
    "HEXA_EVENT_ID",
    "HEXA_EVENT_TIME",
    "content-type",
    "_reply_channel",
    "_payload_encoder",
)
"""The eight headers our emitters write (the core's ``SEALED_HEADERS``), in their order."""
_N0, _N1, _N2, _N3, _N4, _N5, _N6, _N7 = EMITTED


def emitted_pairs(raw: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    """Text headers that are exactly our emitters' eight as ``(name, value)`` pairs, in the
    order they write them (which the core reads by position; a map such as Pulsar's
    properties keeps no order); KeyError for any other headers. A tuple of tuples of text
    and bytes, which the garbage collector stops tracking at its first pass (a list it
    would walk at every pass as long as the record is out)."""
    if len(raw) != len(EMITTED):
        raise KeyError(len(raw))
    return (  # unrolled: one frame, no comprehension's
        (_N0, raw[_N0].encode()),
        (_N1, raw[_N1].encode()),
        (_N2, raw[_N2].encode()),
        (_N3, raw[_N3].encode()),
        (_N4, raw[_N4].encode()),
        (_N5, raw[_N5].encode()),
        (_N6, raw[_N6].encode()),
        (_N7, raw[_N7].encode()),
    )


def pairs(raw: Mapping[str, str]) -> Sequence[tuple[str, bytes]]:
    """Text headers (no base64 among them) as ``(name, value)`` pairs: our emitters' eight
    in their order (:func:`emitted_pairs`), any others in the map's order."""
    try:
        return emitted_pairs(raw)
    except KeyError:
        return [(name, value.encode()) for name, value in raw.items()]
