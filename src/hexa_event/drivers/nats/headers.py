"""Record headers <-> NATS headers: clean UTF-8 values travel as text, others base64
(listed in ``HEXA_B64``); the key travels in ``HEXA_KEY``, a delayed record's accepted time
in ``HEXA_ACCEPTED_AT``; ``Nats-`` names belong to NATS (refused on send, dropped on
receive). Why: docs/engines/nats.md, "Internals".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from itertools import chain

from ...errors import DriverError
from ...numbers import epoch_seconds
from ..kit import textheaders

KEY = "HEXA_KEY"
BASE64 = "HEXA_B64"
ACCEPTED_AT = "HEXA_ACCEPTED_AT"
MSG_ID = "Nats-Msg-Id"
_NATS_PREFIX = "Nats-"
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_UNSAFE = re.compile(r"[\r\n\x00]")
_OURS = frozenset({KEY, BASE64, ACCEPTED_AT})
_PLAIN = re.compile(rb"(?:[!-~](?:[ -~]*[!-~])?)?")
"""Printable ASCII without spaces at either end (or empty): travels as it is (fast path)."""


def _text(value: bytes) -> str | None:
    """``value`` as header text when it survives the trip unchanged, else None."""
    if _PLAIN.fullmatch(value):
        return value.decode("ascii")
    text = textheaders.utf8(value)
    return None if text is None or text != text.strip() or _UNSAFE.search(text) else text


@functools.lru_cache(maxsize=10_000)  # records repeat the same few dozen names
def _good_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and not name.startswith(_NATS_PREFIX) and name not in _OURS


def encoded_size(headers: Mapping[str, str]) -> int:
    """Bytes ``headers`` take on the wire (``NATS/1.0`` line, ``name: value`` lines, CRLFs),
    as nats-py writes them: they count against the server's ``max_payload`` with the body."""
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def encode(key: str, headers: Mapping[str, bytes], msg_id: str | None) -> dict[str, str]:
    """NATS headers for a record (raises DriverError for a name NATS cannot carry)."""
    for name in headers:
        if not _good_name(name):
            raise DriverError(
                f"header name {name!r} cannot be sent over NATS: use letters, digits and "
                "!#$%&'*+-.^_`|~ only, and not the Nats- prefix (NATS's own headers)",
                retriable=False,
            )
    items = chain(headers.items(), ((KEY, key.encode()),)) if key else headers.items()
    out = textheaders.encode(items, listed_in=BASE64, text=_text)
    if msg_id is not None:
        out[MSG_ID] = msg_id
    return out


def decode(raw: Mapping[str, str] | None) -> tuple[str, dict[str, bytes], float | None]:
    """The record key, headers and (for a delayed record) accepted time of a message."""
    if not raw:
        return "", {}, None
    headers = textheaders.decode(raw, listed_in=BASE64, keep=lambda n: not n.startswith("Nats-"))
    key = headers.pop(KEY, b"")
    accepted_at = epoch_seconds(headers.pop(ACCEPTED_AT, None))
    return key.decode("utf-8", "replace"), headers, accepted_at
