"""Keeping secrets out of reprs, logs and errors: one set of rules for every driver and
command (a leaf: it imports nothing of ours).

A setting is secret when its name contains one of :data:`SECRET_MARKERS` (``password``,
``token``, ``sasl.password``, ``nkeys_seed``...). URLs lose their password (``user:***@``),
a bare user part that is a token (``***@``, except in database URLs, where it is the user
name) and the value of every secret query option (``?token=***``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import fields
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "***"
SECRET_MARKERS = (
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "creds",
    "seed",
    "nkey",
    "jwt",
    "private",
    "auth_params",
    "authentication",
    "jaas",
    "pem",
    "ssl.key",
    "keytab",
    "oauthbearer.config",
    "sasl.oauthbearer",
    "assertion",
    "api.key",
    "apikey",
)
"""Parts of a setting's name that make its value secret (compared lowercased)."""
SQL_SCHEMES = ("postgresql", "postgres", "sqlite", "mysql", "mariadb")
"""URL schemes whose bare user part is a user name, not a token."""
_USERINFO = re.compile(r"//[^/@\s]+@")
_HOST = r"(?:\[[^\]@/?#\s]*\]|[^:/?#@,\s]*)(?::\d*)?"
_HOSTS = re.compile(rf"{_HOST}(?:,{_HOST})*(?:\?.*|(?<=\d)/.*)?", re.DOTALL)
"""Hosts (with ports), then a query, or a path after a port: what may come before an
``@`` of a URL with no user part."""
_PATH_OR_QUERY = re.compile(r"[/?]")
_DELIMITERS = re.compile(r"[#?/@:]")


def is_secret(name: str) -> bool:
    """Whether a setting named ``name`` holds a secret (its value is never shown)."""
    lowered = name.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` whose secret values are replaced by ``***``."""
    return {k: (REDACTED if is_secret(k) else v) for k, v in config.items()}


def redact_url(url: str) -> str:
    """``url`` without secrets: ``user:***@`` for a password, ``***@`` for a bare user part
    (a token; database URLs keep their user name) and ``key=***`` for secret query options.
    A password holding ``#``, ``?`` or ``/`` unencoded is hidden too (SQLAlchemy reads such a
    URL, and connects with it). Never raises: an unparsable URL comes back as
    ``<unparsable URL>``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    loose = _loose_userinfo(url)
    if loose is not None:
        start, at = loose
        user, sep, _ = url[start:at].partition(":")
        if sep:
            shown = f"{user}:{REDACTED}"
        elif parts.scheme.lower().split("+", 1)[0] in SQL_SCHEMES:
            shown = url[start:at]
        else:
            shown = REDACTED
        rest = redact_url(url[:start] + url[at + 1 :])  # the host on, its query options
        if not rest.lower().startswith(url[:start].lower()):
            return rest
        return f"{rest[:start]}{shown}@{rest[start:]}"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, _ = userinfo.partition(":")
        if sep:
            netloc = f"{user}:{REDACTED}@{host}"
        elif parts.scheme.lower().split("+", 1)[0] not in SQL_SCHEMES:
            netloc = f"{REDACTED}@{host}"
    query = "&".join(
        f"{key}={REDACTED}" if sep and is_secret(unquote(key)) else f"{key}{sep}{value}"
        for key, sep, value in (item.partition("=") for item in parts.query.split("&"))
    )
    if netloc == parts.netloc and query == parts.query:
        return url  # unchanged (and sqlite:////abs.db keeps its empty host)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact_urls(urls: str) -> str:
    """A comma-separated list of server URLs, each through :func:`redact_url`."""
    return ",".join(redact_url(url) for url in urls.split(","))


def redact_text(text: str) -> str:
    """Free text (a client's error message) with the user info of any URL in it hidden."""
    return _USERINFO.sub(f"//{REDACTED}@", text)


def url_secrets(url: str) -> list[str]:
    """The secret values in ``url`` (password, token, secret query options), raw and
    percent-decoded, longest first: what :func:`scrub` removes from text."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    loose = _loose_userinfo(url)
    if loose is not None:
        start, at = loose
        found += url_secrets(url[:start] + url[at + 1 :])
        userinfo = url[start:at]
    elif "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
    else:
        userinfo = ""
    if userinfo:
        user, sep, password = userinfo.partition(":")
        sql = parts.scheme.lower().split("+", 1)[0] in SQL_SCHEMES
        secret = password if sep else ("" if sql else user)
        # and its pieces: a parser that ends the host at "#", "?" or "/" quotes the first
        # one as a port or a host ("port 's3cr' is not a number")
        found += [secret, *(p for p in _DELIMITERS.split(secret) if len(p) >= 4)]
    for item in parts.query.split("&"):
        key, sep, value = item.partition("=")
        if sep and is_secret(unquote(key)):
            found.append(value)
    return _longest_first(v for raw in found for v in (raw, unquote(raw)))


def config_secrets(config: Mapping[str, Any]) -> list[str]:
    """The values of ``config``'s secret settings (and their lines), longest first."""
    found = {str(v) for k, v in config.items() if is_secret(k) and v is not None}
    found |= {part for v in list(found) for part in v.splitlines() if len(part.strip()) >= 4}
    return _longest_first(v for v in found if len(v) >= 4)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrubber(config: Mapping[str, Any]) -> Callable[[str], str]:
    """A function removing every secret value of ``config`` from a text (errors, logs)."""
    secrets = config_secrets(config)
    return lambda text: scrub(text, secrets)


def redacted_repr(options: Any, *, secret: Collection[str] = (), urls: Collection[str] = ()) -> str:
    """``Name(field=value, ...)`` of a dataclass without its unset fields (None, empty
    mappings): the ``secret`` fields shown as ``***``, the ``urls`` fields (a URL, a
    comma-separated list or a tuple of them) without user info, mappings through
    :func:`redact`."""
    parts = []
    for f in fields(options):
        value = getattr(options, f.name)
        if value is None or (isinstance(value, Mapping) and not value):
            continue
        if f.name in secret:
            value = REDACTED
        elif f.name in urls:
            value = redact_urls(value) if isinstance(value, str) else tuple(map(redact_url, value))
        elif isinstance(value, Mapping):
            value = redact(value)
        parts.append(f"{f.name}={value!r}")
    return f"{type(options).__name__}({', '.join(parts)})"


def _loose_userinfo(url: str) -> tuple[int, int] | None:
    """Where the user part of ``url`` begins and ends (the index of its ``@``), read as
    leniently as SQLAlchemy reads it: a password may hold ``#``, ``?``, ``/`` or ``@``
    unencoded (``urlsplit`` ends the host at the first of ``#?/``, so it misses such a
    password). None when there is no ``@``, or what comes before it reads as hosts whose
    path or query holds it (then ``urlsplit``'s reading stands)."""
    start = url.find("://") + 3
    at = url.find("@", start) if start >= 3 else -1
    if at < 0 or _HOSTS.fullmatch(url, start, at):
        return None
    # A password may hold an "@" too: the host comes after the last one before a path.
    while (after := url.find("@", at + 1)) >= 0 and not _PATH_OR_QUERY.search(url, at, after):
        at = after
    return start, at


def _longest_first(values: Iterable[str]) -> list[str]:
    return sorted({v for v in values if v}, key=len, reverse=True)
