"""Context propagators: :class:`~hexa_event.Context` <-> message headers.

``inject`` writes header values (bytes); ``extract`` reads them back onto a context. A
missing header is never an error (a foreign producer, or Go's context without a user);
a present but malformed ``_ctx_user`` raises :class:`~hexa_event.errors.DecodeError`, which
dead-letters the record as poison. W3C headers that do not parse are ignored, as the W3C
specifications require.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Protocol
from urllib.parse import quote, unquote

import msgspec

from .context import GUEST, Context, User, new_correlation_id
from .errors import DecodeError

Headers = MutableMapping[str, bytes]

# Header names of Go hexa-event (wire compatible).
CORRELATION_ID = "_ctx_correlation_id"
LOCALE = "_ctx_locale"
USER = "_ctx_user"
# W3C trace context and baggage.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"


class Propagator(Protocol):
    """Carries part of a context in headers."""

    def inject(self, ctx: Context, headers: Headers) -> None:
        """Write this propagator's headers for ``ctx`` into ``headers``."""

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        """Return ``ctx`` updated from ``headers``; raise DecodeError on malformed values."""


def _text(headers: Mapping[str, bytes], name: str) -> str | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"header {name!r} is not UTF-8 text") from exc


GUEST_WIRE = msgspec.json.encode(GUEST.to_wire())
"""The ``_ctx_user`` value of a context without a user (hexa's guest): read as no user."""


class HexaPropagator:
    """Go hexa's default propagator: correlation id, locale and user.

    Always writes all three headers (a guest user when the context has none) so Go
    consumers, which require all three, can read what Python emits.
    """

    def inject(self, ctx: Context, headers: Headers) -> None:
        headers[CORRELATION_ID] = ctx.correlation_id.encode()
        headers[LOCALE] = ctx.locale.encode()
        user = ctx.user
        headers[USER] = GUEST_WIRE if user is None else msgspec.json.encode(user.to_wire())

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        correlation_id, locale, user = self.read(headers)
        return ctx.with_(correlation_id=correlation_id, locale=locale, user=user)

    @staticmethod
    def read(headers: Mapping[str, bytes]) -> tuple[str, str, User | None]:
        """``(correlation_id, locale, user)`` from ``headers`` (what :meth:`extract` sets)."""
        get = headers.get
        try:  # the common case inline; a value that is not UTF-8 bytes is named below
            raw = get(CORRELATION_ID)
            correlation_id = raw.decode() if raw else new_correlation_id()
            raw = get(LOCALE)
            locale = raw.decode() if raw else ""
        except (AttributeError, UnicodeDecodeError):
            correlation_id = _text(headers, CORRELATION_ID) or new_correlation_id()
            locale = _text(headers, LOCALE) or ""
        user: User | None = None
        raw_user = get(USER)
        if raw_user and raw_user != GUEST_WIRE:
            try:
                data = msgspec.json.decode(raw_user)
                if not isinstance(data, dict):
                    raise TypeError("not a JSON object")
                user = User.from_wire(data)
            except (msgspec.DecodeError, TypeError, ValueError, RecursionError) as exc:
                # RecursionError: JSON nested deeper than msgspec follows
                raise DecodeError(f"header {USER!r} is not a hexa user object: {exc}") from exc
            if user.is_guest:
                user = None
        return correlation_id, locale, user


class KeysPropagator:
    """Copies chosen ``Context.values`` entries to headers of the same name.

    With ``strict``, inject fails on a missing key (Go's behaviour); otherwise it is skipped.
    """

    def __init__(self, keys: Iterable[str], *, strict: bool = False) -> None:
        self.keys = tuple(keys)
        self.strict = strict

    def inject(self, ctx: Context, headers: Headers) -> None:
        for key in self.keys:
            value = ctx.values.get(key)
            if value is None:
                if self.strict:
                    raise KeyError(f"context value {key!r} is required by KeysPropagator")
                continue
            headers[key] = value.encode()

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        found = {}
        for key in self.keys:
            value = _text(headers, key)
            if value is not None:
                found[key] = value
        if not found:
            return ctx
        return ctx.with_(values={**ctx.values, **found})


_TRACEPARENT_RE = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class TraceContextPropagator:
    """W3C trace context: ``traceparent`` and ``tracestate`` headers."""

    def inject(self, ctx: Context, headers: Headers) -> None:
        if ctx.traceparent:
            headers[TRACEPARENT] = ctx.traceparent.encode()
            if ctx.tracestate:
                headers[TRACESTATE] = ctx.tracestate.encode()

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        found = headers.get(TRACEPARENT)
        if found is None:
            return ctx
        raw = found.decode("ascii", "replace").strip().lower()
        if not _TRACEPARENT_RE.match(raw):
            return ctx
        state = headers.get(TRACESTATE, b"").decode("ascii", "replace").strip()
        return ctx.with_(traceparent=raw, tracestate=state)


class BaggagePropagator:
    """W3C baggage: ``baggage: k1=v1,k2=v2`` with percent-encoded values."""

    def inject(self, ctx: Context, headers: Headers) -> None:
        if ctx.baggage:
            headers[BAGGAGE] = ",".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in ctx.baggage.items()
            ).encode()

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        raw = headers.get(BAGGAGE)
        if not raw:
            return ctx
        baggage: dict[str, str] = {}
        for member in raw.decode("utf-8", "replace").split(","):
            name, sep, value = member.partition("=")
            if not sep or not name.strip():
                continue
            baggage[unquote(name.strip())] = unquote(value.split(";", 1)[0].strip())
        return ctx.with_(baggage=baggage) if baggage else ctx


class CompositePropagator:
    """Runs several propagators: inject in order (later ones win), extract chained."""

    def __init__(self, *propagators: Propagator) -> None:
        self.propagators = propagators

    def inject(self, ctx: Context, headers: Headers) -> None:
        for propagator in self.propagators:
            propagator.inject(ctx, headers)

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        for propagator in self.propagators:
            ctx = propagator.extract(headers, ctx)
        return ctx


class DefaultPropagator(CompositePropagator):
    """Go hexa's headers plus W3C trace context and baggage (what :func:`default_propagator`
    gives): a composite whose extract skips the W3C readers when their headers are absent."""

    def __init__(self) -> None:
        self._hexa = HexaPropagator()
        self._trace = TraceContextPropagator()
        self._baggage = BaggagePropagator()
        super().__init__(self._hexa, self._trace, self._baggage)

    def extract(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        ctx = self._hexa.extract(headers, ctx)
        return self.w3c(headers, ctx)

    def receive(
        self,
        headers: Mapping[str, bytes],
        event_id: str,
        handler_action: str,
        root_event_id: str,
        root_handler_action: str,
    ) -> Context:
        """A handler's context: the same as ``extract(headers, Context(<dedup fields>))``,
        built as one object (the receiver's per-event path)."""
        correlation_id, locale, user = self._hexa.read(headers)
        ctx = Context(
            correlation_id=correlation_id,
            locale=locale,
            user=user,
            event_id=event_id,
            handler_action=handler_action,
            root_event_id=root_event_id,
            root_handler_action=root_handler_action,
        )
        return self.w3c(headers, ctx)

    def check(self, headers: Mapping[str, bytes]) -> None:
        """Raise what :meth:`receive` would raise for ``headers`` (a malformed header makes
        the record poison), building no context in the common case: for a receiver whose
        handler never sees the per-event context (batch handlers)."""
        get = headers.get
        try:
            raw = get(CORRELATION_ID)
            if raw:
                raw.decode()
            raw = get(LOCALE)
            if raw:
                raw.decode()
        except (AttributeError, UnicodeDecodeError):
            self.receive(headers, "", "", "", "")
            return
        raw = get(USER)
        if raw and raw != GUEST_WIRE:
            self.receive(headers, "", "", "", "")
            return
        # The W3C readers decode bytes with errors replaced: only another type can fail them
        # (looked at only when one is there: most records carry none).
        if TRACEPARENT in headers or TRACESTATE in headers or BAGGAGE in headers:
            for raw in (get(TRACEPARENT), get(TRACESTATE), get(BAGGAGE)):
                if raw is not None and type(raw) is not bytes:
                    self.receive(headers, "", "", "", "")
                    return

    def w3c(self, headers: Mapping[str, bytes], ctx: Context) -> Context:
        """``ctx`` with the W3C trace context and baggage of ``headers`` (the last steps of
        :meth:`extract`)."""
        if TRACEPARENT in headers:
            ctx = self._trace.extract(headers, ctx)
        if BAGGAGE in headers:
            ctx = self._baggage.extract(headers, ctx)
        return ctx


def default_propagator() -> CompositePropagator:
    """Go hexa's headers plus W3C trace context and baggage."""
    return DefaultPropagator()
