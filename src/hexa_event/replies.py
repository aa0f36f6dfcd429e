"""One emitter's reply channel: where the answers to its requests arrive.

An emitter opens it on its first :meth:`~hexa_event.Emitter.request`: a channel of its own
(``_reply.<random hex>``) read by an ephemeral group of one member; when the emitter closes,
the group is removed and the channel deleted (:meth:`~hexa_event.driver.Driver.discard`).
Every reply is acked as it is read and handed to the caller waiting for it, matched by the
request's event id (the ``HEXA_REPLY_TO`` header, which :meth:`~hexa_event.Emitter.reply`
writes), or, for a reply without it (a Go hexa-event handler that emits to
``ReplyChannel``), by the correlation id when exactly one waiting request has it. A reply
nobody waits for (it came after its request's timeout, or it is ambiguous) is dropped,
logged and counted in :attr:`ReplyInbox.dropped`: it never reaches another caller, unless
it carries the correlation id alone and a later request with that id waits (nothing tells
the two apart: docs/replies-and-schedules.md says how to avoid it).

If the reading ends while the emitter is open (the driver ended the subscription, or its
fetch failed for good), the requests waiting fail with DriverError naming why, and the next
request opens a new reply channel (the old one is deleted), as a receiver would be started
again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from . import envelope as env
from .codecs import get_codec
from .driver import Delivery, Driver, Subscription, SubscriptionSpec
from .errors import ClosedError, ConfigurationError, DriverError
from .event import Message
from .numbers import epoch_seconds
from .propagation import CORRELATION_ID

logger = logging.getLogger(__name__)

_FETCH_BACKOFF = (0.1, 0.5, 1.0, 2.0)
_BATCH = 256
_STEP_TIMEOUT = 15.0
"""How long closing waits on each step the broker must answer (a subscribing still under
way, the subscription's close, the channel's deletion) before it gives up and logs it."""


@dataclass(slots=True)
class _Waiter:
    future: asyncio.Future[Message[Any]]
    correlation_id: str
    payload_type: Any


class ReplyInbox:
    """The reply channel of one emitter (see the module docstring)."""

    def __init__(self, driver: Driver, owner: object = None) -> None:
        self.driver = driver
        self.owner = owner
        """The emitter, kept alive while its channel is read (the driver's subscription
        leads to the reading task, and so here): the connection that made an emitter only
        used as ``conn.emitter().request(...)`` still has it to close on ``conn.close()``."""
        self.channel = self.group = ""
        self._new_channel()
        self.answered = 0
        """Replies handed to their caller."""
        self.dropped = 0
        """Replies no caller waited for (late after a timeout, unknown or ambiguous)."""
        self._reading_error = ""
        self._not_reading_until = 0.0
        """``time.monotonic()`` until which a failed fetch's retry waits."""
        self._waiting: dict[str, _Waiter] = {}
        self._by_correlation: dict[str, list[str]] = {}
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop whose tasks read the channel (set when they start)."""
        self._settler: asyncio.Task[None] | None = None
        self._acked: list[Delivery] = []
        self._acked_wake = asyncio.Event()
        self._opening: asyncio.Task[None] | None = None
        self._closed = False
        self._provisioned = False
        """The channel was made: closing deletes it, even if subscribing to it failed."""
        self._ended = False
        """The reading ended (not by close): the next :meth:`open` takes a new channel."""

    def _new_channel(self) -> None:
        token = uuid.uuid4().hex
        self.channel = f"_reply.{token}"
        self.group = f"hexa-reply-{token}"

    async def open(self) -> str:
        """Subscribe to the reply channel unless it is being read; return its name.

        The subscribing runs in a task of its own: a caller that gives up (its request timed
        out) does not cut it short, and the next request finds the channel open. When the
        reading ended, this opens a new channel (see the module docstring)."""
        if self._closed:
            raise ClosedError("this emitter was closed; make a new one to send requests")
        if self._task is not None and not self._task.done():
            return self.channel
        if self._opening is None:
            self._opening = asyncio.create_task(self._open(), name=f"hexa-open:{self.channel}")
            self._opening.add_done_callback(self._opened)
        await asyncio.shield(self._opening)
        return self.channel

    async def _open(self) -> None:
        if self._ended:  # leave the channel whose reading ended for a new one
            await self._stop()
            self._new_channel()
            self._ended = False
        await self.driver.provision([self.channel])
        self._provisioned = True
        subscription = await self.driver.subscribe(
            SubscriptionSpec(
                group=self.group,
                channels=(self.channel,),
                start="earliest",
                prefetch=1024,
                ephemeral=True,
            )
        )
        if self._closed:  # closed while subscribing
            await subscription.close()
            raise ClosedError("this emitter was closed; make a new one to send requests")
        self._subscription = subscription
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(
            self._read(subscription), name=f"hexa-replies:{self.channel}"
        )
        self._settler = asyncio.create_task(
            self._settle_loop(subscription), name=f"hexa-replies-acks:{self.channel}"
        )

    def _opened(self, task: asyncio.Task[None]) -> None:
        # Done: the next open() finds the reading going on, or (it failed) tries again.
        self._opening = None

    def expect(
        self, event_id: str, correlation_id: str, payload_type: Any
    ) -> asyncio.Future[Message[Any]]:
        """Register a caller waiting for the reply to ``event_id``."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            raise ConfigurationError(
                "this emitter's reply channel is read by tasks of another event loop (the "
                "emitter sent requests under an earlier asyncio.run()), so no reply would "
                "reach this request: make the connection and its emitters inside the loop "
                "that uses them (one asyncio.run() for the whole program), or close the "
                "emitter before its loop ends and make a new one"
            )
        if event_id in self._waiting:
            raise ConfigurationError(
                f"a request with event id {event_id!r} is already waiting for its reply: "
                "give each request its own Event.id (or leave it unset)"
            )
        future: asyncio.Future[Message[Any]] = loop.create_future()
        self._waiting[event_id] = _Waiter(future, correlation_id, payload_type)
        if correlation_id:
            self._by_correlation.setdefault(correlation_id, []).append(event_id)
        return future

    def forget(self, event_id: str) -> None:
        """The caller stopped waiting (answered, timed out or cancelled)."""
        waiter = self._waiting.pop(event_id, None)
        if waiter is None or not waiter.correlation_id:
            return
        ids = self._by_correlation.get(waiter.correlation_id)
        if ids is not None:
            with contextlib.suppress(ValueError):
                ids.remove(event_id)
            if not ids:
                del self._by_correlation[waiter.correlation_id]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def reading_error(self, since: float) -> str:
        """Why reading the channel failed, if it did not read at some time after ``since``
        (``time.monotonic()``: a fetch failed then, or its retry was waiting); else ""."""
        return self._reading_error if self._not_reading_until > since else ""

    async def _read(self, subscription: Subscription) -> None:
        failures = 0
        while True:
            try:
                deliveries = await subscription.fetch(_BATCH)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, DriverError) and not exc.retriable:
                    self._end(exc)
                    return
                delay = _FETCH_BACKOFF[min(failures, len(_FETCH_BACKOFF) - 1)]
                failures += 1
                self._reading_error = f"{type(exc).__name__}: {exc}"
                self._not_reading_until = time.monotonic() + delay
                logger.warning(
                    "reading replies from %s failed (%s); retrying in %.1fs",
                    self.channel,
                    self._reading_error,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._reading_error = ""
            if not deliveries:
                if not self._closed:
                    self._end(
                        DriverError(
                            "the driver ended the reply subscription (was the driver closed "
                            "under the emitter? close the emitter first)"
                        )
                    )
                return
            for delivery in deliveries:
                delivery.ack()
                self._deliver(delivery)
            self._acked.extend(deliveries)
            self._acked_wake.set()

    async def _settle_loop(self, subscription: Subscription) -> None:
        """Write acks beside the reading (a driver may coalesce them over a few ms)."""
        while True:
            await self._acked_wake.wait()
            self._acked_wake.clear()
            batch: Sequence[Delivery] = self._acked
            self._acked = []
            try:
                await subscription.settle(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a reply read again is dropped as unknown: harmless
                logger.warning("acking replies on %s failed: %s", self.channel, exc)

    def _deliver(self, delivery: Delivery) -> None:
        headers = delivery.record.headers
        request_id = _text(headers.get(env.REPLY_TO))
        if request_id:
            waiter = self._waiting.get(request_id)
        else:
            request_id, waiter = self._by_correlation_id(_text(headers.get(CORRELATION_ID)))
        if waiter is None or waiter.future.done():
            self.dropped += 1
            logger.warning(
                "dropped a reply on %s (event %s, in reply to %s): no request waits for it "
                "(it came after the request's timeout, or it names no known request); "
                "%d dropped so far",
                self.channel,
                _shown(_text(headers.get(env.EVENT_ID)) or delivery.coordinates),
                _shown(request_id or "?"),
                self.dropped,
            )
            return
        self.forget(request_id)
        try:
            message = _message(delivery, waiter.payload_type)
        except Exception as exc:
            error: BaseException = exc
            if isinstance(exc, StopIteration):  # a Future refuses it: this reader would end
                error = RuntimeError("decoding the reply raised StopIteration")
                error.__cause__ = exc
            waiter.future.set_exception(error)
            return
        self.answered += 1
        waiter.future.set_result(message)

    def _by_correlation_id(self, correlation_id: str) -> tuple[str, _Waiter | None]:
        ids = self._by_correlation.get(correlation_id) if correlation_id else None
        if not ids:
            return "", None
        if len(ids) > 1:
            logger.warning(
                "a reply on %s without %s has correlation id %s, which %d waiting requests "
                "share: it cannot be matched (give concurrent requests their own correlation "
                "ids when the replier does not write %s)",
                self.channel,
                env.REPLY_TO,
                _shown(correlation_id),
                len(ids),
                env.REPLY_TO,
            )
            return "", None
        return ids[0], self._waiting.get(ids[0])

    async def _step(self, what: str, step: Awaitable[None]) -> None:
        """One step of closing that the broker must answer, bounded by ``_STEP_TIMEOUT``:
        a failure or no answer is logged, and closing goes on."""
        try:
            async with asyncio.timeout(_STEP_TIMEOUT):
                await step
        except Exception as exc:
            cause = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                cause = f"no answer within {_STEP_TIMEOUT:g}s; is the broker up?"
            logger.warning(
                "%s the reply channel %s failed (%s); it holds only replies and can be "
                "deleted by hand",
                what,
                self.channel,
                cause,
            )

    def _end(self, exc: BaseException) -> None:
        """The reading stopped for good: fail the requests waiting (their replies come to a
        channel nobody reads now); the next request opens a new one."""
        why = f"the reply channel {self.channel} stopped: {exc}"
        logger.error("%s; the next request opens a new reply channel", why)
        self._ended = True
        self._fail_waiting(lambda: DriverError(f"{why}; send the request again"))

    def _fail_waiting(self, error: Callable[[], BaseException]) -> None:
        for waiter in self._waiting.values():
            if not waiter.future.done():
                waiter.future.set_exception(error())

    async def close(self) -> None:
        """Stop reading and remove the ephemeral group. Idempotent. The requests waiting fail
        with ClosedError at once; each step the broker must answer is bounded by
        ``_STEP_TIMEOUT`` (a broker that accepts the connection and never answers)."""
        if self._closed:
            return
        self._closed = True
        self._fail_waiting(lambda: ClosedError("the emitter was closed"))
        opening = self._opening
        if opening is not None and not opening.done():
            await asyncio.wait([opening], timeout=_STEP_TIMEOUT)
            if not opening.done():
                opening.cancel()  # should it subscribe after all, _open closes that
                logger.warning(
                    "gave up opening the reply channel %s: the driver's subscribe did not "
                    "answer within %gs (is the broker up?); if the channel was created, it "
                    "holds only replies and can be deleted by hand",
                    self.channel,
                    _STEP_TIMEOUT,
                )
                return
        await self._stop()

    async def _stop(self) -> None:
        """Stop reading, close the subscription and delete the channel (nobody else reads
        it: without this, every emitter that sent a request would leave a topic behind on
        Kafka and Pulsar)."""
        loop = asyncio.get_running_loop()
        # Tasks of an earlier loop (closed from a later asyncio.run()) ended with it: awaiting
        # them here would raise RuntimeError ('Event loop is closed').
        tasks = [t for t in (self._task, self._settler) if t is not None and t.get_loop() is loop]
        self._task = self._settler = None
        self._reading_error = ""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acked = []
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            await self._step("closing the subscription of", subscription.close())
        if self._provisioned:
            self._provisioned = False
            await self._step("deleting", self.driver.discard([self.channel]))


def _shown(text: str) -> str:
    """A header's text as a log line shows it: quoted, cut short (a hostile reply's 10 kB
    header or its line breaks must not flood or forge the log)."""
    return repr(text[:_SHOWN]) + ("..." if len(text) > _SHOWN else "")


_SHOWN = 80


def _text(raw: bytes | None) -> str:
    if not raw:
        return ""
    try:
        return raw.decode("utf-8")
    except (AttributeError, UnicodeDecodeError):
        return ""


def _message(delivery: Delivery, payload_type: Any) -> Message[Any]:
    record = delivery.record
    headers = record.headers
    codec_name = _text(headers.get(env.PAYLOAD_ENCODER)) or "json"
    payload = get_codec(codec_name).decode(record.body, payload_type)
    seconds = epoch_seconds(headers.get(env.EVENT_TIME))
    if seconds is None:
        seconds = delivery.timestamp
    return Message(
        id=_text(headers.get(env.EVENT_ID)) or delivery.coordinates,
        channel=record.channel,
        key=record.key,
        payload=payload,
        headers=MappingProxyType(dict(headers)),
        attempt=1,
        timestamp=datetime.fromtimestamp(seconds, UTC) if seconds is not None else None,
        reply_channel=_text(headers.get(env.REPLY_CHANNEL)),
        codec=codec_name,
        delivered_from=record.channel,
        native=delivery.native,
    )
