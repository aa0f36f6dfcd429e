"""What the options classes of every driver share: :class:`DriverOptions` (the one
``from_url`` and a redacted ``repr``), :class:`Redacted` (the repr alone), and the checks of
their fields, each naming the owner and the field."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, ClassVar, NamedTuple, Self
from urllib.parse import SplitResult, unquote, urlsplit

from ...errors import ConfigurationError
from ...numbers import LARGEST, check_number
from ...redaction import is_secret, redacted_repr
from .query import parse_query

logger = logging.getLogger(__name__)

INT32 = 2**31 - 1
"""The largest value of a 32-bit setting (a client's or protocol's count, ms or seconds)."""


class Redacted:
    """A ``repr`` (and ``str``) without secrets: :attr:`masked_fields` as ``***``,
    :attr:`url_fields` without user info, mappings without their secret settings, unset
    fields (None, empty mappings) left out."""

    __slots__ = ()
    masked_fields: ClassVar[tuple[str, ...]] = ()
    url_fields: ClassVar[tuple[str, ...]] = ()

    def __repr__(self) -> str:
        return redacted_repr(self, secret=self.masked_fields, urls=self.url_fields)


class ParsedUrl(NamedTuple):
    """A URL as :meth:`DriverOptions.from_parts` gets it: the parts, the user info's user and
    password (percent-decoded, None when absent), the hosts (``host:port[,host:port]``) and
    the query's ``(key, raw value)`` pairs let through to the client, in order."""

    parts: SplitResult
    user: str | None
    password: str | None
    hosts: str
    passed: list[tuple[str, str]]


class DriverOptions(Redacted):
    """The base of a driver's options dataclass, with the one ``from_url(url, **options)``
    rule (docs/driver-contract.md, "Shared plumbing"): keyword options, then query options
    (fields typed by :mod:`.query`, or what :meth:`passes_through` lets through), then
    :meth:`from_parts` (user info, hosts, path); unknown names are refused."""

    __slots__ = ()
    engine: ClassVar[str] = ""
    """The engine's name in messages (``Kafka``)."""
    example: ClassVar[str] = ""
    """A URL of the engine, named when a URL has no host (empty: URLs have no hosts)."""
    query_exclude: ClassVar[tuple[str, ...]] = ()
    client_hint: ClassVar[str] = ""
    """Where settings that are not fields go (``Pass librdkafka settings in ...``)."""
    passthrough_hint: ClassVar[str] = ""
    url_field: ClassVar[str] = ""
    """The field given the whole URL, without the query options :meth:`url_query` takes
    out (its class reads them too, so that ``SqlOptions(url=...)`` does); empty: the URL
    is read here."""

    @classmethod
    def passes_through(cls, key: str) -> bool:
        """Whether query option ``key`` (not a field) goes to the engine's client."""
        return False

    @classmethod
    def url_query(cls, url: str) -> tuple[dict[str, Any], str]:
        """For a class with a :attr:`url_field`, which defines it (what its client lets
        through depends on the URL): the fields ``url``'s query sets (typed), and ``url``
        without them (what the engine's client gets)."""
        raise NotImplementedError(f"{cls.__name__} has a url_field: define url_query")

    @classmethod
    def _overridden(cls, from_url: dict[str, Any], keywords: dict[str, Any]) -> None:
        """Warn of each query option a keyword overrides with another value: tools given
        the URL alone (``hexa-event tail``, ``doctor``) would read another schema, table
        prefix or stream than the service does. Secrets' values are not shown."""
        for name in sorted(from_url.keys() & keywords.keys()):
            keyword, in_url = keywords[name], from_url[name]
            if keyword != in_url:
                shown = ("***", "***") if is_secret(name) else (repr(keyword), repr(in_url))
                logger.warning(
                    "%s: %s=%s given as a keyword overrides %s=%s in the URL (tools given the "
                    "URL alone use the URL's); give it once",
                    cls.__name__,
                    name,
                    shown[0],
                    name,
                    shown[1],
                )

    @classmethod
    def from_parts(cls, fields: dict[str, Any], url: ParsedUrl) -> None:
        """Complete ``fields`` (the keyword and query options) from the rest of ``url``,
        with ``setdefault``."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        known = {f.name for f in fields(cls)} - {cls.url_field}  # type: ignore[arg-type]
        if unknown := sorted(set(options) - known):
            hint = f". {cls.client_hint}" if cls.client_hint else ""
            raise ConfigurationError(
                f"unknown {cls.engine} option(s) {unknown}; known: {sorted(known)}{hint}"
            )
        make: Callable[..., Self] = cls
        if cls.url_field:
            typed, rest = cls.url_query(url)
            cls._overridden(typed, options)
            return make(**{**typed, **options, cls.url_field: rest})
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if cls.example and not hosts:
            scheme = cls.example.split("://", 1)[0]
            raise ConfigurationError(
                f"a {scheme} URL needs a host, e.g. {cls.example!r} (got no host)"
            )
        typed, passed = parse_query(
            cls,
            parts.query,
            engine=cls.engine,
            exclude=cls.query_exclude,
            passthrough=cls.passes_through,
            hint=cls.passthrough_hint,
        )
        cls._overridden(typed, options)
        given = {**typed, **options}
        decoded = (unquote(user) if at else None, unquote(password) if colon else None)
        cls.from_parts(given, ParsedUrl(parts, *decoded, hosts, passed))
        return make(**given)


def check_mapping(
    owner: str,
    name: str,
    value: object,
    owned: Mapping[str, str] | None = None,
    *,
    what: str = "client settings",
) -> None:
    """Refuse ``value`` unless it is a mapping of non-empty text keys, none of them one the
    driver sets itself (``owned``: key -> why, or what to set instead)."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{owner}.{name} must be a mapping of {what}, got {type(value).__name__}"
        )
    for key in value:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"{owner}.{name} has a bad key {key!r}")
        if owned and key in owned:
            raise ConfigurationError(f"{owner}.{name}: do not set {key!r}: {owned[key]}")


def check_choice(
    owner: str, name: str, value: object, choices: Sequence[object], hint: str = ""
) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (``hint``: what to pick, appended)."""
    if value in choices:
        return
    listed = [repr(choice) for choice in choices]
    allowed = " or ".join(listed) if len(listed) == 2 else "one of " + ", ".join(listed)
    raise ConfigurationError(f"{owner}.{name} must be {allowed}, got {value!r}{hint}")


def check_name(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is a non-empty string (or None, when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{owner}.{name} must be a non-empty string, got {value!r}")


def check_count(
    owner: str,
    name: str,
    value: object,
    *,
    minimum: int = 1,
    maximum: int | None = None,
    unlimited: int | None = None,
    meaning: str = "no limit",
) -> None:
    """Refuse ``value`` unless it is an integer (never a bool) from ``minimum`` to
    ``maximum`` (or :data:`~hexa_event.numbers.LARGEST`), or the ``unlimited`` value (-1,
    say), which means ``meaning``."""
    if isinstance(value, int) and abs(value) > LARGEST:  # 400 digits: named by its length
        check_number(f"{owner}.{name}", value, minimum=minimum, maximum=maximum, integer=True)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (value == unlimited or (minimum <= value and (maximum is None or value <= maximum)))
    ):
        return
    bound = f"from {minimum}" + (f" to {maximum}" if maximum is not None else "")
    extra = f" (or {unlimited}: {meaning})" if unlimited is not None else ""
    raise ConfigurationError(f"{owner}.{name} must be an integer {bound}{extra}, got {value!r}")
