"""One error hierarchy for the whole library.

Every error raised by hexa-event derives from :class:`HexaEventError`; each message says what
to change. Handlers raise :class:`PermanentError` (or a type named in a subscription's
``permanent`` list) to skip retries and go straight to the dead-letter channel.
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """How to install the optional dependencies ``extra`` names, while hexa-event is not
    published on PyPI: from a clone, or from the repository by URL."""
    return (
        f"install the [{extra}] extra: in a clone of hexa-event, pip install -e '.[{extra}]'; "
        f"or pip install 'hexa-event[{extra}] @ git+<the hexa-event repository URL>' "
        "(hexa-event is not on PyPI yet)"
    )


_EXTRA_OF_MODULE = {
    "sqlalchemy": "sql",
    "aiosqlite": "sql",
    "asyncpg": "sql",
    "psycopg": "sql",
    "greenlet": "sql",
    "confluent_kafka": "kafka",
    "pulsar": "pulsar",
    "_pulsar": "pulsar",
    "nats": "nats",
    "google": "protobuf",
    "pydantic": "pydantic",
    "opentelemetry": "otel",
    "prometheus_client": "prometheus",
    "uvicorn": "serve",
    "watchfiles": "serve",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module ``exc`` could not find, or None when no extra of
    hexa-event provides it (a module of the application's own, a typo)."""
    return _EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])


class HexaEventError(Exception):
    """Base class of every error raised by hexa-event."""


class MissingExtraError(HexaEventError, ModuleNotFoundError):
    """A part of hexa-event was imported without the optional dependency it needs (still a
    ``ModuleNotFoundError``); the message names the extra and how to install it."""

    def __init__(self, part: str, exc: ModuleNotFoundError, extra: str) -> None:
        super().__init__(f"{part} needs {exc.name!r}: {install_hint(extra)}", name=exc.name)


def require_extra(part: str, exc: ModuleNotFoundError) -> MissingExtraError | ModuleNotFoundError:
    """What importing ``part`` raises for ``exc``: a :class:`MissingExtraError` naming the
    extra when one of hexa-event's extras installs the missing module, else ``exc`` itself
    (a module of hexa-event's own or a typo: a bug to see as it is)."""
    extra = missing_extra(exc)
    return exc if extra is None else MissingExtraError(part, exc, extra)


class ConfigurationError(HexaEventError, ValueError):
    """An option, URL or argument is invalid; the message names it and the fix."""


class InvalidEventError(HexaEventError, ValueError):
    """An :class:`~hexa_event.Event` is missing a required field or has a bad value."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"invalid event: field {field!r} {problem}")


class UnknownCodecError(HexaEventError, LookupError):
    """No codec is registered under the name a record or an emitter asked for."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown codec {name!r}; registered codecs: {', '.join(sorted(known))}. "
            "Register it with hexa_event.codecs.register_codec() on both sides."
        )


class UnknownSchemeError(ConfigurationError):
    """``connect()`` got a URL whose scheme has no driver."""

    def __init__(self, url_scheme: str, known: list[str]) -> None:
        super().__init__(
            f"no driver for URL scheme {url_scheme!r}; known schemes: "
            f"{', '.join(sorted(known))}. Check the URL, or install the extra of that driver "
            f"(for Kafka: {install_hint('kafka')})."
        )


class InvalidArgumentError(HexaEventError, TypeError):
    """An argument has the wrong type (a dict where an :class:`~hexa_event.Event` or a
    :class:`~hexa_event.Context` belongs); the message names the type to pass."""


class EncodeError(HexaEventError, TypeError):
    """A payload could not be encoded by the chosen codec."""


class DecodeError(HexaEventError, ValueError):
    """A record's body or headers could not be decoded (poison input)."""


class PayloadTypeError(DecodeError):
    """A record's payload does not match the type the subscription asked for."""


class DriverError(HexaEventError):
    """The broker or database failed an operation; ``retriable`` says whether to try again."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        self.retriable = retriable
        super().__init__(message)


class NotStoredError(DriverError):
    """A record was refused, by a check before sending or by the broker: it is known not
    stored. ``retriable=False`` (the default): sending it again cannot succeed, for example a
    record over a size limit (``limit`` names it) or a channel name the engine cannot carry;
    the outbox relay parks such a row and goes on. ``retriable=True``: it was not sent
    because another record of its batch was refused, and may be sent again as it is."""

    def __init__(self, message: str, *, retriable: bool = False, limit: str = "") -> None:
        self.limit = limit
        super().__init__(message, retriable=retriable)


class PartialPublishError(DriverError):
    """A publish of several records failed for some of them: the outcome per record.

    ``stored``: indexes (into the records given to ``publish``) known stored. ``failed``:
    index -> the error of that record; a :class:`NotStoredError` there means known not
    stored, any other error may or may not be stored. Every index is in one of the two.
    """

    def __init__(self, stored: frozenset[int], failed: dict[int, DriverError]) -> None:
        self.stored = stored
        self.failed = failed
        first = min(failed) if failed else 0
        cause = failed.get(first)
        refused = sum(1 for e in failed.values() if isinstance(e, NotStoredError))
        super().__init__(
            f"{len(failed)} of {len(stored) + len(failed)} records failed ({len(stored)} stored, "
            f"{refused} known not stored); record {first}: {cause}",
            retriable=any(e.retriable for e in failed.values()),
        )


class ChannelNotFoundError(DriverError):
    """A channel (topic, stream, subject) does not exist and provisioning is turned off."""

    def __init__(self, channel: str, hint: str = "") -> None:
        self.channel = channel
        super().__init__(
            f"channel {channel!r} does not exist and this driver was told not to create it"
            + (f"; {hint}" if hint else "; create it, or enable provisioning in the options"),
            retriable=False,
        )


class SubscriptionBusyError(DriverError):
    """An exclusive subscription is already held by another consumer."""


class ClosedError(HexaEventError, RuntimeError):
    """The emitter, receiver or driver was used after it was closed."""


class PermanentError(HexaEventError):
    """Raised by a handler: retrying will not help, dead-letter the event now."""


class AlreadySettledError(HexaEventError, RuntimeError):
    """A delivery was acked or nacked a second time; the first settlement stands."""

    def __init__(self, coordinates: str, outcome: str) -> None:
        self.coordinates = coordinates
        super().__init__(
            f"delivery {coordinates} was already settled ({outcome}); settle each delivery once"
        )


class ReceiverFailedError(HexaEventError, RuntimeError):
    """A receiver stopped because it could not go on (the driver was closed under it, a
    fatal broker error); the message says which action and why."""


class RequestTimeoutError(HexaEventError, TimeoutError):
    """``Emitter.request`` got no reply within its timeout; a later reply is dropped."""

    def __init__(
        self, channel: str, timeout: float, reply_channel: str, reading_error: str = ""
    ) -> None:
        self.channel = channel
        self.timeout = timeout
        hint = (
            f"is a handler subscribed to {channel!r} and does it call "
            "emitter.reply(ctx, msg, payload)? Raise timeout= if it is slow"
        )
        if reading_error:  # the reply may have come: it could not be read
            hint = f"reading the reply channel fails ({reading_error}); the log says more"
        super().__init__(
            f"no reply within {timeout:g}s to the request sent to channel {channel!r} "
            f"(reply channel {reply_channel!r}): {hint}"
        )


class NotARequestError(HexaEventError, ValueError):
    """``Emitter.reply`` was given a message that carries no reply channel."""

    def __init__(self, event_id: str, channel: str) -> None:
        super().__init__(
            f"event {event_id} on channel {channel!r} has no reply channel: only events sent "
            "with emitter.request() (or with Event.reply_channel set) can be replied to; "
            "check msg.reply_channel before replying"
        )
