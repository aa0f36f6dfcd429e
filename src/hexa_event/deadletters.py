"""Reading dead letters as data: what failed, why, after how many attempts, from where.

:func:`read_dead_letter` turns a dead-letter record into a :class:`DeadLetter`;
:func:`subscribe_dead_letters` subscribes a handler to an action's ``<action>.dlq`` on a
receiver. The reader gets the original payload decoded to its type; a letter whose body does
not decode (a poison letter, or a type that changed) still reaches the handler, with
``payload=None`` and ``decode_error`` set: the reader never dead-letters a letter for its
content. Its own failures are retried in place (``retry``), like any handler's.

    @subscribe_dead_letters(receiver, "billing.charge", payload=Order)
    async def alert(ctx: he.Context, letter: DeadLetter[Order]) -> None:
        page(letter.reason, letter.error_message, letter.attempts, letter.source_channel)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from . import envelope as env
from .codecs import get_codec
from .context import Context
from .driver import RawRecord
from .event import Message
from .middleware import check_handler
from .receiver import Receiver
from .retry import RetryPolicy, dead_letter_channel

T = TypeVar("T")

DeadLetterHandler = Callable[[Context, "DeadLetter[Any]"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[T]):
    """One dead letter, read."""

    event_id: str
    key: str
    payload: T | None
    """The original payload decoded to the requested type; None if it did not decode."""
    decode_error: str
    """Why the payload did not decode (empty when it did)."""
    reason: str
    """``poison``, ``permanent-error`` or ``retries-exhausted`` (``HEXA_DEAD_LETTER_REASON``)."""
    error_type: str
    error_message: str
    attempts: int
    """Attempts made by the failed action (``HEXA_ATTEMPT`` on the dead letter)."""
    source_channel: str
    """The channel the event was emitted to."""
    source_coordinates: str
    """Where the broker held the record that failed (e.g. ``orders-2-1532``)."""
    action: str
    """The action that failed (``HEXA_ROOT_EVENT_HANDLER_ACTION_NAME``)."""
    root_event_id: str
    emitted_at: datetime | None
    codec: str
    headers: Mapping[str, bytes]
    body: bytes
    channel: str = ""
    """The dead-letter channel it was read from."""
    coordinates: str = ""
    """Where the broker holds the dead letter itself (when read from a raw delivery)."""


def _text(headers: Mapping[str, bytes], name: str) -> str:
    raw = headers.get(name)
    return raw.decode("utf-8", "replace") if raw is not None else ""


def _int(headers: Mapping[str, bytes], name: str, default: int) -> int:
    try:
        return int(_text(headers, name).strip() or default)
    except ValueError:
        return default


def read_dead_letter(
    record: RawRecord, payload_type: Any = None, *, coordinates: str = ""
) -> DeadLetter[Any]:
    """Read ``record`` (from ``<action>.dlq``); never raises for what the record holds."""
    headers = record.headers
    codec = _text(headers, env.PAYLOAD_ENCODER) or "json"
    payload: Any = None
    decode_error = ""
    try:
        payload = get_codec(codec).decode(record.body, payload_type)
    except Exception as exc:
        decode_error = f"{type(exc).__name__}: {exc}"
    emitted_ms = _int(headers, env.EVENT_TIME, 0)
    emitted_at = None
    if emitted_ms > 0:
        try:
            emitted_at = datetime.fromtimestamp(emitted_ms / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            emitted_at = None
    event_id = _text(headers, env.EVENT_ID)
    return DeadLetter(
        event_id=event_id,
        key=record.key,
        payload=payload,
        decode_error=decode_error,
        reason=_text(headers, env.DEAD_LETTER_REASON),
        error_type=_text(headers, env.ERROR_TYPE),
        error_message=_text(headers, env.ERROR_MESSAGE),
        attempts=max(_int(headers, env.ATTEMPT, 1), 1),
        source_channel=_text(headers, env.SOURCE_CHANNEL),
        source_coordinates=_text(headers, env.SOURCE_COORDINATES),
        action=_text(headers, env.ROOT_ACTION),
        root_event_id=_text(headers, env.ROOT_EVENT_ID) or event_id,
        emitted_at=emitted_at,
        codec=codec,
        headers=dict(headers),
        body=record.body,
        channel=record.channel,
        coordinates=coordinates,
    )


def subscribe_dead_letters(
    receiver: Receiver,
    action: str,
    *,
    payload: Any = None,
    reader: str | None = None,
    retry: RetryPolicy | None = None,
    start: str = "earliest",
    handler: DeadLetterHandler | None = None,
) -> Callable[[DeadLetterHandler], DeadLetterHandler]:
    """Subscribe ``handler(ctx, letter)`` to ``action``'s dead letters on ``receiver``.

    ``reader`` is the reading action (its consumer group; ``<action>.dlq-reader`` by
    default). Failures of the handler are retried in place (``retry``; by default 1000
    times, back-off capped at a minute: about 16 hours) rather than dead-lettered again.
    """
    policy = retry or RetryPolicy(
        max_retries=1000, initial_delay=1.0, max_delay=60.0, in_place=True
    )
    channel = dead_letter_channel(action)
    name = reader or f"{action}.dlq-reader"

    def register(fn: DeadLetterHandler) -> DeadLetterHandler:
        check_handler(
            fn,
            where="subscribe_dead_letters()",
            signature="(ctx: he.Context, letter: he.DeadLetter[T]) -> None",
        )

        async def read(ctx: Context, msg: Message[bytes]) -> None:
            record = RawRecord(
                channel=msg.delivered_from or channel,
                key=msg.key,
                headers=msg.headers,
                body=msg.payload,
            )
            await fn(ctx, read_dead_letter(record, payload))

        receiver.subscribe(
            channel,
            action=name,
            payload=bytes,
            retry=policy,
            start=start,  # type: ignore[arg-type]
            handler=read,
        )
        return fn

    if handler is not None:
        register(handler)
    return register
