"""One rule for a driver URL's query options: each is a field of the options dataclass,
typed by it, or one the driver lets through to its client; anything else is refused naming
the known ones. ``bool`` takes ``true/false/1/0/yes/no`` only; ``int`` and ``float`` finite
numbers up to 2**53 in magnitude; a ``Literal`` or ``Enum`` one of its values;
``tuple[str, ...]`` a comma-separated list; ``str`` the text; mappings and objects are not
query options.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ...errors import ConfigurationError
from ...numbers import LARGEST

BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_UNSET = object()


def parse_query(
    cls: type,
    query: str,
    *,
    engine: str,
    exclude: Collection[str] = (),
    passthrough: Callable[[str], bool] | None = None,
    hint: str = "",
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``(fields, passed)``: the typed values of the options that are fields of ``cls``,
    and the ``(key, raw value)`` pairs ``passthrough`` lets through, in order. Raises
    :class:`ConfigurationError` naming the known options or the accepted values."""
    hints = typing.get_type_hints(cls)
    kinds = {f.name: _plain(hints[f.name]) for f in fields(cls) if f.name not in exclude}
    known = {name: kind for name, kind in kinds.items() if kind is not _UNSET}
    typed: dict[str, Any] = {}
    passed: list[tuple[str, str]] = []
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key in known:
            value = coerce(engine, key, raw, known[key])
            if key in typed and typed[key] != value:
                raise ConfigurationError(
                    f"the {engine} URL gives {key} twice ({typed[key]!r}, {value!r}); keep one"
                )
            typed[key] = value
        elif passthrough is not None and passthrough(key):
            passed.append((key, raw))
        else:
            raise ConfigurationError(
                f"unknown {engine} URL option {key!r}; known: {', '.join(sorted(known))}"
                + (f". {hint}" if hint else "")
            )
    return typed, passed


def take_query(cls: type, url: str, **parse: Any) -> tuple[dict[str, Any], str]:
    """:func:`parse_query` (with the keywords ``parse``) of ``url``'s query, and ``url``
    without the options it typed (byte for byte when there are none; else the options let
    through re-encoded, in order)."""
    base, _, rest = url.partition("?")
    query, hash_, fragment = rest.partition("#")
    typed, kept = parse_query(cls, query, **parse)
    if not typed:
        return typed, url
    rest = urlencode(kept)
    return typed, base + (f"?{rest}" if rest else "") + hash_ + fragment


def coerce(engine: str, key: str, raw: str, kind: Any) -> Any:
    """``raw`` as a value of ``kind`` (see the module's rules)."""

    def refused(why: str) -> ConfigurationError:
        shown = repr(raw) if len(raw) <= 40 else f"{raw[:20]!r}... ({len(raw)} characters)"
        return ConfigurationError(f"{engine} URL option {key}={shown} {why}")

    if kind is bool:
        if (value := BOOLEANS.get(raw.strip().lower())) is None:
            raise refused("is not a boolean; use one of true, false, 1, 0, yes, no")
        return value
    if kind is int or kind is float:
        try:
            number = kind(raw)
        except ValueError:
            number = None
        if number is None or not -LARGEST <= number <= LARGEST:  # NaN, infinities, 400 digits
            what = "an integer" if kind is int else "a finite number (seconds for a duration)"
            raise refused(f"must be {what} of at most {LARGEST:.0e} in magnitude")
        return number
    if isinstance(kind, tuple):  # the values of a Literal
        if raw not in kind:
            raise refused(f"must be one of {', '.join(kind)}")
        return raw
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        for member in kind:
            if raw.lower() in (str(member.value).lower(), member.name.lower()):
                return member
        raise refused(f"must be one of {', '.join(str(m.value) for m in kind)}")
    if kind == "list":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _plain(annotation: Any) -> Any:
    """What :func:`coerce` takes for a field's annotation; ``_UNSET`` when the query cannot
    give it (mappings, objects)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _plain(inner[0]) if len(inner) == 1 else _UNSET
    if origin is typing.Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    if origin is tuple:
        return "list"
    if annotation in (bool, int, float, str):
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    return _UNSET
