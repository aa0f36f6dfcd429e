"""The handler pipeline for one subscription: decode, run, then ack, retry or dead-letter.

:meth:`Dispatcher.handle` settles every delivery exactly once and never raises (except
cancellation, after giving the delivery back): poison input is dead-lettered, handler errors
become retries or dead letters, and a copy that cannot be published makes the delivery come
back later rather than be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from . import envelope as env
from .codecs import get_codec
from .context import Context
from .driver import Delivery, Driver, RawRecord
from .errors import DecodeError, HexaEventError, PermanentError
from .event import Message
from .middleware import Handler
from .propagation import Propagator
from .retry import RetryPolicy, dead_letter_channel, retry_channel, retry_number_of

logger = logging.getLogger(__name__)

PermanentPredicate = Callable[[BaseException], bool]

_EMPTY_CONTEXT = Context(correlation_id="")
# Back-off for giving a delivery back when a retry or dead-letter copy cannot be published.
_REPUBLISH_BACKOFF = 1.0
_MAX_ERROR_TEXT = 1024


@dataclass(frozen=True, slots=True)
class Route:
    """Everything the pipeline needs to know about one subscription."""

    action: str
    handler: Handler
    payload_type: Any
    retry: RetryPolicy
    is_permanent: PermanentPredicate
    propagator: Propagator


class Dispatcher:
    """Runs one subscription's deliveries through decode, handler and settlement."""

    def __init__(
        self,
        driver: Driver,
        route: Route,
        closing: asyncio.Event,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self._driver = driver
        self._route = route
        self._closing = closing
        self._slots = slots or asyncio.Semaphore(1_000_000)
        self._retry_prefix = f"{route.action}.retry."
        self._action = route.action.encode()
        self.handled = 0
        self.dead_lettered = 0
        self.retried = 0

    async def handle(self, delivery: Delivery) -> None:
        """Settle ``delivery``: ack, retry copy, dead letter, or nack when shutting down."""
        route = self._route
        record = delivery.record
        headers = record.headers
        get = headers.get
        try:
            event_id = env.event_id_of(headers, delivery.coordinates)
            raw_root, raw_source = get(env.ROOT_EVENT_ID), get(env.SOURCE_CHANNEL)
            root_id = raw_root.decode() if raw_root else event_id
            source_channel = raw_source.decode() if raw_source else record.channel
            attempt, retry_at_ms = self._attempt_and_due(delivery)
        except (DecodeError, UnicodeDecodeError, AttributeError) as exc:
            await self._dead_letter(delivery, "poison", exc, delivery.coordinates, 1)
            return

        if retry_at_ms is not None and not await self._wait_until(retry_at_ms, delivery):
            return

        try:
            ctx = route.propagator.extract(headers, _EMPTY_CONTEXT)
            raw_codec = get(env.PAYLOAD_ENCODER)
            codec_name = raw_codec.decode() if raw_codec else "json"
            payload = get_codec(codec_name).decode(record.body, route.payload_type)
            raw_reply = get(env.REPLY_CHANNEL)
            message: Message[Any] = Message(
                id=event_id,
                channel=source_channel,
                key=record.key,
                payload=payload,
                headers=headers,
                attempt=attempt,
                timestamp=env.event_time_of(headers, delivery.timestamp),
                reply_channel=raw_reply.decode() if raw_reply else "",
                codec=codec_name,
                delivered_from=record.channel,
                native=delivery.native,
            )
        except (HexaEventError, UnicodeDecodeError, ValueError, TypeError) as exc:
            await self._dead_letter(delivery, "poison", exc, event_id, attempt)
            return
        ctx = ctx.with_(
            event_id=event_id,
            handler_action=route.action,
            root_event_id=root_id,
            root_handler_action=route.action,
        )
        await self._run(delivery, ctx, message)

    def _attempt_and_due(self, delivery: Delivery) -> tuple[int, int | None]:
        """This delivery's attempt number and not-before time (epoch ms) if it is a retry.

        Only copies in this action's own chain (its retry channels, or headers naming it as
        the root action) continue a count; for any other action, a copy (a dead letter read
        by an operator's handler, say) is a first attempt.
        """
        headers = delivery.record.headers
        channel = delivery.record.channel
        if env.ATTEMPT not in headers and not channel.startswith(self._retry_prefix):
            return 1, None  # the common case: a first delivery from the source channel
        retry_number = retry_number_of(channel, self._route.action)
        attempt = env.header_int(headers, env.ATTEMPT, retry_number + 1)
        due = env.header_int(headers, env.RETRY_AT, -1)
        if not retry_number and headers.get(env.ROOT_ACTION) != self._action:
            return 1, None
        if due >= 0:
            return attempt, due
        if retry_number and delivery.timestamp is not None:
            # A Go hexa-event retry record: due at produce time + back-off, as Go computes.
            return attempt, int((delivery.timestamp + self._route.retry.delay(retry_number)) * 1000)
        return attempt, None

    async def _wait_until(self, due_ms: int, delivery: Delivery) -> bool:
        """Wait for ``due_ms``; on shutdown give the delivery back and return False."""
        remaining = due_ms / 1000 - _now()
        if remaining <= 0:
            return True
        if await self._sleep(remaining):
            return True
        await delivery.nack(max(0.0, due_ms / 1000 - _now()))
        return False

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; False if shutdown began meanwhile."""
        if self._closing.is_set():
            return False
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return True
        return False

    async def _run(self, delivery: Delivery, ctx: Context, message: Message[Any]) -> None:
        route = self._route
        while True:
            try:
                async with self._slots:
                    await route.handler(ctx, message)
            except asyncio.CancelledError:
                await asyncio.shield(delivery.nack())
                raise
            except Exception as exc:
                if route.is_permanent(exc):
                    await self._dead_letter(
                        delivery, "permanent-error", exc, message.id, message.attempt
                    )
                    return
                if message.attempt > route.retry.max_retries:
                    await self._dead_letter(
                        delivery, "retries-exhausted", exc, message.id, message.attempt
                    )
                    return
                if route.retry.in_place:
                    if not await self._sleep(route.retry.delay(message.attempt)):
                        await delivery.nack()
                        return
                    message = _next_attempt(message)
                    continue
                await self._send_retry(delivery, ctx, message, exc)
                return
            else:
                self.handled += 1
                await delivery.ack()
                return

    async def _send_retry(
        self, delivery: Delivery, ctx: Context, message: Message[Any], exc: BaseException
    ) -> None:
        retry_number = message.attempt
        due_ms = env.now_ms() + int(self._route.retry.delay(retry_number) * 1000)
        headers = _copy_headers(
            delivery,
            message.id,
            ctx.root_event_id,
            ctx.root_handler_action,
            message.channel,
            exc,
        )
        headers[env.ATTEMPT] = str(retry_number + 1).encode()
        headers[env.RETRY_AT] = str(due_ms).encode()
        copy = RawRecord(
            channel=retry_channel(self._route.action, retry_number),
            key=delivery.record.key,
            headers=headers,
            body=delivery.record.body,
        )
        if await self._publish_copy(delivery, copy):
            self.retried += 1
            await delivery.ack()

    async def _dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        exc: BaseException,
        event_id: str,
        attempt: int,
    ) -> None:
        headers_in = delivery.record.headers
        root_id = _safe_text(headers_in, env.ROOT_EVENT_ID) or event_id
        root_action = self._route.action
        source = _safe_text(headers_in, env.SOURCE_CHANNEL) or delivery.record.channel
        headers = _copy_headers(delivery, event_id, root_id, root_action, source, exc)
        headers[env.DEAD_LETTER_REASON] = reason.encode()
        headers[env.ATTEMPT] = str(attempt).encode()
        headers.pop(env.RETRY_AT, None)
        copy = RawRecord(
            channel=dead_letter_channel(self._route.action),
            key=delivery.record.key or event_id,
            headers=headers,
            body=delivery.record.body,
        )
        log = logger.error if reason != "poison" else logger.warning
        log(
            "dead-lettering: action=%s event_id=%s channel=%s key=%s attempt=%d reason=%s "
            "error=%s: %s",
            self._route.action,
            event_id,
            source,
            delivery.record.key,
            attempt,
            reason,
            type(exc).__name__,
            _short(exc),
        )
        if await self._publish_copy(delivery, copy):
            self.dead_lettered += 1
            await delivery.ack()

    async def _publish_copy(self, delivery: Delivery, copy: RawRecord) -> bool:
        """Publish a retry/dead-letter copy; on failure give the delivery back for later."""
        try:
            await self._driver.publish([copy])
        except asyncio.CancelledError:
            await asyncio.shield(delivery.nack())
            raise
        except Exception as exc:
            logger.error(
                "could not publish to %s (%s: %s); the event will be delivered again",
                copy.channel,
                type(exc).__name__,
                _short(exc),
            )
            await delivery.nack(_REPUBLISH_BACKOFF)
            return False
        return True


def _copy_headers(
    delivery: Delivery,
    event_id: str,
    root_id: str,
    root_action: str,
    source_channel: str,
    exc: BaseException,
) -> dict[str, bytes]:
    headers = dict(delivery.record.headers)
    headers[env.EVENT_ID] = event_id.encode()
    headers[env.ROOT_EVENT_ID] = root_id.encode()
    headers[env.ROOT_ACTION] = root_action.encode()
    headers[env.SOURCE_CHANNEL] = source_channel.encode()
    headers[env.SOURCE_COORDINATES] = delivery.coordinates.encode()
    headers[env.ERROR_TYPE] = type(exc).__name__.encode()
    headers[env.ERROR_MESSAGE] = _short(exc).encode()
    return headers


def _next_attempt(message: Message[Any]) -> Message[Any]:
    return msgspec.structs.replace(message, attempt=message.attempt + 1)


def _safe_text(headers: Mapping[str, bytes], name: str) -> str:
    try:
        return env.header_text(headers, name)
    except DecodeError:
        return ""


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _now() -> float:
    return env.now_ms() / 1000


def permanent_predicate(
    permanent: tuple[type[BaseException], ...] | PermanentPredicate | None,
) -> PermanentPredicate:
    """Normalise a subscription's ``permanent`` option; PermanentError always counts."""
    if permanent is None:
        return lambda exc: isinstance(exc, PermanentError)
    if isinstance(permanent, tuple):
        types: tuple[type[BaseException], ...] = (PermanentError, *permanent)
        return lambda exc: isinstance(exc, types)
    predicate = permanent
    return lambda exc: isinstance(exc, PermanentError) or bool(predicate(exc))
