"""The handler pipeline for one subscription: open, decode, run, then settle.

:meth:`Dispatcher.handle` settles every delivery it is given exactly once, whatever the
record holds and whatever the handler raises, or returns the time to come back when the
delivery is a retry copy that is not due yet and the driver cannot hold it back:

- headers the core cannot read, a payload that does not decode, an unknown codec: the
  record is poison and goes to the dead-letter channel (reason ``poison``);
- the handler returns: ack;
- the handler raises anything (any ``BaseException``, including a ``CancelledError`` of its
  own; only the cancellation of the dispatcher's own task is not the handler's): a retry
  copy, an in-place retry, or a dead letter (``permanent-error``, ``retries-exhausted``);
- a copy that cannot be published: the delivery is nacked with a growing back-off, so it
  comes back later instead of being lost;
- shutting down while a delivery waits for its due time: nack for the time left.

The common delivery (the first of an event of ours from a source channel, due now, in
JSON) is read in one pass by :meth:`Dispatcher.first`, which builds only what the handler
sees; any other, and any that pass cannot read, goes the careful way, which names what is
wrong. Both hand the handler the same context and message.

Retry copies, in-place retries and dead letters go through the receiver's publish pipeline
(:mod:`hexa_event.publishing`) as a :class:`~hexa_event.publishing.Publication` naming the
action, the reason and the failed run's message, so publish middlewares (telemetry, yours)
see every one. Settling only marks the delivery; the receiver writes settlements to the
driver in batches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec

from . import codecs, wire
from . import envelope as env
from .codecs import Codec, get_codec, json_decoder
from .context import Context, new_correlation_id
from .driver import Delivery, Features, PairHeaders, RecordBatch
from .envelope import (
    ATTEMPT,
    CONTENT_TYPE,
    DELIVER_AT,
    EVENT_ID,
    EVENT_TIME,
    PAYLOAD_ENCODER,
    REPLY_CHANNEL,
    ROOT_EVENT_ID,
    SOURCE_CHANNEL,
)
from .errors import ConfigurationError, PermanentError
from .event import Message, loggable
from .middleware import Handler, log_failure
from .propagation import (
    BAGGAGE,
    CORRELATION_ID,
    GUEST_WIRE,
    LOCALE,
    TRACEPARENT,
    USER,
    DefaultPropagator,
    Propagator,
)
from .publishing import Publication, PublishCall

logger = logging.getLogger(__name__)

PermanentPredicate = Callable[[BaseException], bool]

_REPUBLISH_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)

_GIVEN_BACK_KEPT = 1024
"""Event ids remembered as given back for a failed publish (past it, health's time bound
alone ends the publish error)."""
_TIMES_KEPT = 64
_CHANNELS_KEPT = 1024

SEALED_HEADERS = (
    CORRELATION_ID,
    LOCALE,
    USER,
    EVENT_ID,
    EVENT_TIME,
    CONTENT_TYPE,
    REPLY_CHANNEL,
    PAYLOAD_ENCODER,
)
"""The eight headers our emitters write with the default propagator and no headers of the
event's own, in the order they write them: :meth:`Dispatcher.first` reads a record whose
header names are exactly these by position (client pairs), or by name in one call (a dict)."""

_sealed_values = operator.itemgetter(*SEALED_HEADERS)
"""The values of :data:`SEALED_HEADERS` in a mapping, in their order (KeyError if one lacks)."""

_NO_TIME = object()
"""Equal to no header value (``first_records``' last emit time before the first)."""
T = TypeVar("T")

POISON = "poison"
PERMANENT = "permanent-error"
EXHAUSTED = "retries-exhausted"


@dataclass(frozen=True, slots=True)
class Route:
    """Everything the pipeline needs to know about one subscription."""

    chain: wire.Chain
    handler: Handler
    payload_type: Any
    is_permanent: PermanentPredicate
    propagator: Propagator

    @property
    def action(self) -> str:
        return self.chain.action


@dataclass(slots=True)
class Poison:
    """A record that cannot reach the handler: it goes to the dead-letter channel."""

    opened: wire.Opened | None
    error: Exception


@dataclass(slots=True)
class Counters:
    """What one subscription's dispatcher did (read by health and metrics)."""

    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    poison: int = 0
    republish_failures: int = 0


class Dispatcher:
    """Runs one subscription's deliveries through decode, handler and settlement."""

    def __init__(
        self,
        publish: PublishCall,
        features: Features,
        route: Route,
        closing: asyncio.Event,
    ) -> None:
        self._publish = publish
        self._delayed_nack = features.delayed_nack
        self._route = route
        self._action = route.chain.action
        self._closing = closing
        self.counters = Counters()
        self.publish_error = ""
        """Why the last retry copy or dead letter could not be published (empty once one
        could), and since when (``publish_failed_at``, monotonic): read by health."""
        self.publish_failed_at = 0.0
        self.given_back: set[str] = set()
        """Ids of events given back because their copy could not be published: once each
        went through (handled, or a copy published), the publish error is over."""
        self.backing_off: set[Delivery] = set()
        """Deliveries waiting out an in-place retry's back-off: their key waits, not stalled."""
        self.resumed: Callable[[Delivery], None] = _nothing
        """Called when an in-place retry's back-off ended, before the handler runs again."""
        self._times: dict[bytes, datetime] = {}
        """Recent ``HEXA_EVENT_TIME`` values and their datetimes (a burst shares its emit
        millisecond; batches interleave a few partitions' bursts)."""
        self._fast_json: Callable[[bytes], Any] | None = None
        """msgspec's decode for the payload type while the built-in JSON codec is in use
        (set by a subclass that checks that; :func:`codecs.json_decoder`)."""
        propagator = route.propagator
        self._first_propagator: DefaultPropagator | None = None
        """Set when :meth:`first` can read deliveries (it reads the default propagator's own
        headers itself; exactly that class: a subclass may override extract)."""
        if type(propagator) is DefaultPropagator and route.chain.dedup_ids == "event":
            self._first_propagator = propagator
        self._first_json: Callable[[bytes], Any] | None = None
        """The JSON decoder :meth:`first` uses, made when ``codecs.generation`` was
        ``_first_generation``."""
        self._first_generation = -1
        self._source_channels: dict[str, bool] = {}
        """Per channel read: whether it is a source channel (not one of the retry chain's)."""
        # The default propagator builds the handler's context as one object; any other is
        # given a context holding the dedup fields to extract onto.
        self._context: Callable[[Mapping[str, bytes], str, str, str, str], Context] = (
            propagator.receive
            if type(propagator) is DefaultPropagator  # exactly: a subclass may override extract
            else functools.partial(_extract, propagator)
        )

    async def handle(self, delivery: Delivery) -> float | None:
        """Settle ``delivery``, or return the epoch time it is due at (come back then).

        Never raises but for the cancellation of the calling task, after which the delivery
        is nacked (if it was not settled yet).
        """
        read = self.first(delivery)
        if read is None:
            return await self.handle_careful(delivery)
        ctx, message = read
        try:
            await self._route.handler(ctx, message)
        except BaseException as exc:
            await self.failed(delivery, ctx, message, exc)
        else:
            self.counters.handled += 1
            delivery.ack()
            if self.given_back:
                self.went_through(message.id)
        return None

    def went_through(self, event_id: str) -> None:
        """``event_id`` was handled: if it was given back for a failed publish, and was the
        last such, the publish error is over (the outage that caused it ended)."""
        self.given_back.discard(event_id)
        if not self.given_back:
            self.publish_error = ""

    async def handle_careful(self, delivery: Delivery) -> float | None:
        """:meth:`handle` the careful way, for a delivery :meth:`first` did not read: any
        delivery, header values checked one by one."""
        route = self._route
        try:
            opened = self._open(delivery)
            if not isinstance(opened, wire.Opened):
                if isinstance(opened, Poison):
                    await self._dead_letter(delivery, None, POISON, opened.error)
                    return None
                return opened  # the time it is due at, or None once nacked
            try:
                message = self._message(delivery, opened)
                ctx = self._context(
                    delivery.record.headers,
                    opened.event_id,
                    route.chain.action,
                    opened.root_id,
                    opened.root_action,
                )
            except Exception as exc:
                await self._dead_letter(delivery, opened, POISON, exc)
                return None
            try:
                await route.handler(ctx, message)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise
                await self._failed(delivery, opened, ctx, message, exc)
            else:
                self.counters.handled += 1
                delivery.ack()
                if self.given_back:
                    self.went_through(message.id)
            return None
        except BaseException:
            if delivery.outcome is None:
                delivery.nack()
            raise

    def first(self, delivery: Delivery) -> tuple[Context, Message[Any]] | None:
        """The handler's context and message for the common delivery, read in one pass and
        settling nothing: the first delivery of an event from a source channel, due now, in
        JSON, with the default propagator, event ids, text headers and no user. None for any
        other delivery, and for one this pass cannot read: run it through
        :meth:`handle_careful`, which names what is wrong.

        The result is what :meth:`handle` would hand the handler. Run the handler with it,
        then ack (and count it handled), or on a raise call :meth:`failed`.
        """
        propagator = self._first_propagator
        if propagator is None:
            return None
        record = delivery.record
        headers = record.headers
        channel = record.channel
        source_channel = self._source_channels.get(channel)  # _is_source, inline
        if source_channel is None:
            source_channel = self._is_source(channel)
        if not source_channel:
            return None
        try:
            # The eight headers our emitters write (SEALED_HEADERS: no attempt, due time,
            # root, source or trace header among them), as the client's pairs (PairHeaders,
            # no dict built), are read by position; a null value (None) reads as b"", as
            # false. Any other record reads them by name.
            if headers.__class__ is PairHeaders:
                view: Mapping[str, bytes] = headers  # read-only already
                pairs = headers.pairs
                ours = len(pairs) == 8
                if ours:
                    (
                        (n0, raw_correlation),
                        (n1, raw_locale),
                        (n2, user),
                        (n3, raw_id),
                        (n4, raw_time),
                        (n5, _),
                        (n6, raw_reply),
                        (n7, encoder),
                    ) = pairs
                    ours = (n0, n1, n2, n3, n4, n5, n6, n7) == SEALED_HEADERS
                named: Mapping[str, bytes] = headers if ours else headers.mapping()
            else:
                # A dict (Pulsar, STAN, memory) of exactly those eight names, in any
                # order (Pulsar sorts them), is read by name in one call.
                view = MappingProxyType(headers)
                named = headers
                ours = len(headers) == 8
                if ours:
                    try:
                        (
                            raw_correlation,
                            raw_locale,
                            user,
                            raw_id,
                            raw_time,
                            _,
                            raw_reply,
                            encoder,
                        ) = _sealed_values(headers)
                    except KeyError:  # eight headers, not those: read as any other record
                        ours = False
            if ours:
                root_id = ""
                source = channel
            else:
                if ATTEMPT in named or DELIVER_AT in named:
                    return None
                # The seven headers our emitters always write, by subscript (seven ``get``
                # calls cost more); another producer's record, without an event id, reads
                # them one by one (and so does one of ours that lacks one: a KeyError).
                have_id = EVENT_ID in named
                if have_id:
                    try:
                        raw_id = named[EVENT_ID]
                        raw_time = named[EVENT_TIME]
                        encoder = named[PAYLOAD_ENCODER]
                        user = named[USER]
                        raw_reply = named[REPLY_CHANNEL]
                        raw_correlation = named[CORRELATION_ID]
                        raw_locale = named[LOCALE]
                    except KeyError:
                        have_id = False
                if not have_id:
                    get = named.get
                    raw_id = get(EVENT_ID, b"")
                    raw_time = get(EVENT_TIME)
                    encoder = get(PAYLOAD_ENCODER, b"")
                    user = get(USER, b"")
                    raw_reply = get(REPLY_CHANNEL, b"")
                    raw_correlation = get(CORRELATION_ID, b"")
                    raw_locale = get(LOCALE, b"")
                # Rarely set (a test costs less than a get); an empty one counts as not set.
                root_id = named[ROOT_EVENT_ID].decode() if ROOT_EVENT_ID in named else ""
                source = (named[SOURCE_CHANNEL].decode() if SOURCE_CHANNEL in named else "") or (
                    channel
                )
            if encoder and encoder != b"json":
                return None
            if user and user != GUEST_WIRE:
                return None
            event_id = raw_id.decode() if raw_id else delivery.coordinates
            root_id = root_id or event_id
            reply = raw_reply.decode() if raw_reply else ""
            correlation_id = raw_correlation.decode() if raw_correlation else new_correlation_id()
            locale = raw_locale.decode() if raw_locale else ""
            if self._first_generation != codecs.generation:
                self._first_decoder()
            decode = self._first_json
            if decode is None:
                return None
            payload = decode(record.body)
            native = delivery.native
            action = self._action
            # positional, in the fields' order (cheaper than keywords)
            ctx = Context(
                correlation_id, locale, None, {}, "", "", {}, event_id, action, root_id, action
            )
            if not ours and (TRACEPARENT in named or BAGGAGE in named):
                ctx = propagator.w3c(named, ctx)
        except Exception:  # the careful path says what is wrong, if anything
            return None
        timestamp = self._times.get(raw_time) if type(raw_time) is bytes else None
        if timestamp is None:
            timestamp = self._emit_time(raw_time, _broker_time(delivery))
        return (
            ctx,
            Message(
                event_id,
                source,
                record.key,
                payload,
                view,
                1,
                timestamp,
                reply,
                "json",
                channel,
                native,
            ),
        )

    @property
    def reads_first(self) -> bool:
        """Whether :meth:`first` and :meth:`first_records` read deliveries at all (the
        default propagator, event ids); otherwise every one goes the careful way."""
        return self._first_propagator is not None

    def first_records(
        self, batch: RecordBatch, tag: T
    ) -> tuple[list[tuple[T, int, Context, Message[Any]] | None], list[int]]:
        """:meth:`first` for every record of ``batch``, in one pass over its lists: per
        record ``(tag, index, ctx, message)``, or None for one this pass does not read (take
        it out of the batch and handle it as a delivery), with the indexes of those.

        Reads only records with exactly the eight headers our emitters write
        (``SEALED_HEADERS``, by position), an event id, from a source channel, in JSON and
        without a user; the context and message are what :meth:`first` builds for them."""
        count = len(batch)
        propagator = self._first_propagator
        if propagator is None:
            return [None] * count, list(range(count))
        if self._first_generation != codecs.generation:
            self._first_decoder()
        decode = self._first_json
        if decode is None:
            return [None] * count, list(range(count))
        channels, keys, bodies, natives = batch.channels, batch.keys, batch.bodies, batch.natives
        sources = {channel: self._is_source(channel) for channel in set(channels)}
        name0, name1, name2, name3, name4, name5, name6, name7 = SEALED_HEADERS
        guest, action, times, emit_time = GUEST_WIRE, self._action, self._times, self._emit_time
        last_time: object = _NO_TIME  # the last HEXA_EVENT_TIME value found in times
        last_timestamp = None
        items: list[tuple[T, int, Context, Message[Any]] | None] = []
        add = items.append
        odd: list[int] = []
        for index, pairs in enumerate(batch.headers):
            channel = channels[index]
            try:
                if len(pairs) != 8 or not sources[channel]:
                    raise LookupError
                (
                    (n0, correlation),
                    (n1, locale),
                    (n2, user),
                    (n3, raw_id),
                    (n4, raw_time),
                    (n5, _),
                    (n6, reply),
                    (n7, encoder),
                ) = pairs
                # One test per name (the interpreter's own string compare: a tuple of them
                # compares each the generic way, twice the cost for the client's new strings).
                if not (
                    n0 == name0
                    and n1 == name1
                    and n2 == name2
                    and n3 == name3
                    and n4 == name4
                    and n5 == name5
                    and n6 == name6
                    and n7 == name7
                    and raw_id
                    and (not encoder or encoder == b"json")
                    and (not user or user == guest)
                ):
                    raise LookupError
                event_id = raw_id.decode()
                payload = decode(bodies[index])
                ctx = Context(  # positional, in the fields' order (as first() builds it)
                    correlation.decode() if correlation else new_correlation_id(),
                    locale.decode() if locale else "",
                    None,
                    {},
                    "",
                    "",
                    {},
                    event_id,
                    action,
                    event_id,
                    action,
                )
                if raw_time == last_time:  # a burst shares its emit millisecond
                    timestamp = last_timestamp
                else:
                    timestamp = times.get(raw_time) if type(raw_time) is bytes else None
                    if timestamp is None:  # (the broker's time, or a value not seen yet)
                        timestamp = emit_time(raw_time, functools.partial(batch.timestamp, index))
                    else:
                        last_time, last_timestamp = raw_time, timestamp
                add(
                    (
                        tag,
                        index,
                        ctx,
                        Message(
                            event_id,
                            channel,
                            keys[index],
                            payload,
                            PairHeaders(pairs),
                            1,
                            timestamp,
                            reply.decode() if reply else "",
                            "json",
                            channel,
                            natives[index],
                        ),
                    )
                )
            except Exception:  # another record, odd or poison: the careful path says which
                add(None)
                odd.append(index)
        return items, odd

    def _is_source(self, channel: str) -> bool:
        """Whether ``channel`` is a source channel (not one of the retry chain's)."""
        source = self._source_channels.get(channel)
        if source is None:
            source = not self._route.chain.retry_number_of(channel)
            if len(self._source_channels) < _CHANNELS_KEPT:
                self._source_channels[channel] = source
        return source

    def _first_decoder(self) -> None:
        """Set the JSON decoder :meth:`first` uses (again: the codec registry changed)."""
        self._first_json = None
        self._first_generation = codecs.generation
        target = self._route.payload_type
        decode = json_decoder(target)
        if decode is None:  # a codec registered as json, or a type msgspec does not take
            codec = get_codec("json")
            decode = functools.partial(_decode_with, codec, target)
        self._first_json = decode

    async def failed(
        self, delivery: Delivery, ctx: Context, message: Message[Any], exc: BaseException
    ) -> None:
        """The handler raised ``exc`` for what :meth:`first` read: settle ``delivery`` as
        :meth:`handle` does (retry, dead letter, or given back). Re-raises the cancellation
        of the calling task, after nacking the delivery."""
        try:
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise exc
            opened = wire.Opened(
                message.id, ctx.root_event_id, ctx.root_handler_action, message.channel, 1, 0.0
            )
            await self._failed(delivery, opened, ctx, message, exc)
        except BaseException:
            if delivery.outcome is None:
                delivery.nack()
            raise

    def _open(self, delivery: Delivery) -> wire.Opened | Poison | float | None:
        """Read the delivery's ids and due time: what to go on with; a poison record; the
        epoch time a retry copy not yet due is due at (come back then); or None once it is
        nacked for the time left (shutting down, or the driver holds nacked records back)."""
        try:
            opened = wire.open_delivery(delivery, self._route.chain)
        except Exception as exc:
            return Poison(None, exc)
        return self._when_due(delivery, opened) if opened.due else opened

    def _when_due(self, delivery: Delivery, opened: wire.Opened) -> wire.Opened | float | None:
        """For a delivery with a due time: ``opened`` once it is due; else the epoch time it
        is due at, or None once it is nacked for the time left (see :meth:`_open`)."""
        remaining = opened.due - time.time()
        if remaining > 0:
            if self._closing.is_set() or self._delayed_nack:
                delivery.nack(remaining)
                return None
            return opened.due
        return opened

    def _message(self, delivery: Delivery, opened: wire.Opened) -> Message[Any]:
        """The handler's message; raises (the record is poison) when a header or the
        payload cannot be read."""
        route = self._route
        record = delivery.record
        headers = record.headers
        get = headers.get
        try:  # the common case, read inline; odd header values take the careful path
            raw = get(env.PAYLOAD_ENCODER)
            codec_name = raw.decode() if raw else "json"
            raw = get(env.REPLY_CHANNEL)
            reply_channel = raw.decode() if raw else ""
        except (AttributeError, UnicodeDecodeError):
            codec_name = wire.codec_name(headers)
            reply_channel = wire.reply_channel(headers)
        fast = self._fast_json
        if fast is not None and codec_name == "json":
            try:
                payload = fast(record.body)
            except Exception:  # the codec names what is wrong
                payload = get_codec(codec_name).decode(record.body, route.payload_type)
        else:
            payload = get_codec(codec_name).decode(record.body, route.payload_type)
        raw_time = get(env.EVENT_TIME)
        times = self._times
        timestamp = times.get(raw_time) if type(raw_time) is bytes else None
        if timestamp is None:
            timestamp = _header_time(raw_time)
            if timestamp is None:
                timestamp = _datetime(delivery.timestamp)
            elif type(raw_time) is bytes:
                if len(times) >= _TIMES_KEPT:
                    times.clear()
                times[raw_time] = timestamp
        return Message(
            id=opened.event_id,
            channel=opened.source_channel,
            key=record.key,
            payload=payload,
            headers=headers if type(headers) is PairHeaders else MappingProxyType(headers),
            attempt=opened.attempt,
            timestamp=timestamp,
            reply_channel=reply_channel,
            codec=codec_name,
            delivered_from=record.channel,
            native=delivery.native,
        )

    def _emit_time(self, raw_time: Any, broker_time: Callable[[], float | None]) -> datetime | None:
        """A message's time from its ``HEXA_EVENT_TIME`` value (remembered per value), else
        the broker's time (``broker_time()``, read only then)."""
        timestamp = _header_time(raw_time)
        if timestamp is None:
            return _datetime(broker_time())
        if type(raw_time) is bytes:
            times = self._times
            if len(times) >= _TIMES_KEPT:
                times.clear()
            times[raw_time] = timestamp
        return timestamp

    async def _failed(
        self,
        delivery: Delivery,
        opened: wire.Opened,
        ctx: Context,
        message: Message[Any],
        exc: BaseException,
    ) -> None:
        """The handler raised: retry in place, send a retry copy, or dead-letter."""
        route = self._route
        policy = route.chain.policy
        while True:
            self.counters.failed += 1
            log_failure(logger, ctx, message, exc)
            if self._permanent(exc):
                await self._dead_letter(delivery, opened, PERMANENT, exc, message)
                return
            if opened.attempt > policy.max_retries:
                await self._dead_letter(delivery, opened, EXHAUSTED, exc, message)
                return
            if not policy.in_place:
                await self._send_retry(delivery, opened, message, exc)
                return
            retry = Publication((), "retry", route.action, type(exc).__name__, exc, message)
            if not await self._publish_copy(delivery, retry):
                return  # a publish middleware refused the retry: given back for later
            self.backing_off.add(delivery)
            try:
                waited = await self._sleep(policy.delay(opened.attempt))
            finally:
                self.backing_off.discard(delivery)
            if not waited:
                delivery.nack()
                return
            self.resumed(delivery)
            opened = _next(opened)
            message = msgspec.structs.replace(message, attempt=opened.attempt)
            try:
                await route.handler(ctx, message)
            except BaseException as again:
                if isinstance(again, asyncio.CancelledError) and _being_cancelled():
                    raise
                exc = again
                continue
            self.counters.handled += 1
            delivery.ack()
            if self.given_back:
                self.went_through(message.id)
            return

    def _permanent(self, exc: BaseException) -> bool:
        try:
            return bool(self._route.is_permanent(exc))
        except Exception:
            logger.exception("the permanent-error predicate of %s raised", self._route.action)
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

    async def _send_retry(
        self,
        delivery: Delivery,
        opened: wire.Opened,
        message: Message[Any],
        exc: BaseException,
    ) -> None:
        route = self._route
        due = time.time() + route.chain.policy.delay(opened.attempt)
        copy = wire.retry_copy(delivery, opened, route.chain, exc, due)
        retry = Publication((copy,), "retry", route.action, type(exc).__name__, exc, message)
        if await self._publish_copy(delivery, retry):
            self.counters.retried += 1
            delivery.ack()

    async def _dead_letter(
        self,
        delivery: Delivery,
        opened: wire.Opened | None,
        reason: str,
        exc: BaseException,
        message: Message[Any] | None = None,
    ) -> None:
        copy = wire.dead_letter(delivery, opened, self._route.chain, reason, exc)
        log = logger.warning if reason == POISON else logger.error
        log(
            "dead-lettering: action=%s event_id=%s channel=%s key=%s attempt=%s reason=%s "
            "error=%s: %s",
            self._route.action,
            copy.headers.get(env.EVENT_ID, b"").decode("utf-8", "replace"),
            delivery.record.channel,
            loggable(delivery.record.key),
            opened.attempt if opened else 1,
            reason,
            type(exc).__name__,
            wire.error_text(exc),
        )
        letter = Publication((copy,), "dead-letter", self._route.action, reason, exc, message)
        if await self._publish_copy(delivery, letter):
            if reason == POISON:
                self.counters.poison += 1
            self.counters.dead_lettered += 1
            delivery.ack()

    async def _publish_copy(self, delivery: Delivery, publication: Publication) -> bool:
        """Send a retry or dead letter through the publish pipeline; when it fails, give
        the delivery back for later."""
        try:
            await self._publish(publication)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise  # ours: only a CancelledError a publish raised itself is a failure
            self.counters.republish_failures += 1
            step = min(max(delivery.delivery_count, 1), len(_REPUBLISH_BACKOFF)) - 1
            records = publication.records
            self.publish_error = f"{type(exc).__name__}: {wire.error_text(exc)}"
            self.publish_failed_at = time.monotonic()
            if len(self.given_back) < _GIVEN_BACK_KEPT:
                event_id = delivery.record.headers.get(env.EVENT_ID, b"")
                self.given_back.add(event_id.decode("utf-8", "replace"))
            logger.error(
                "could not publish to %s (%s: %s); the event will be delivered again in %.0f s",
                records[0].channel if records else f"the {publication.purpose} pipeline",
                type(exc).__name__,
                wire.error_text(exc),
                _REPUBLISH_BACKOFF[step],
            )
            delivery.nack(_REPUBLISH_BACKOFF[step])
            return False
        self.publish_error = ""
        self.given_back.clear()
        return True


def _nothing(delivery: Delivery) -> None:
    pass


def _next(opened: wire.Opened) -> wire.Opened:
    return wire.Opened(
        opened.event_id,
        opened.root_id,
        opened.root_action,
        opened.source_channel,
        opened.attempt + 1,
        0.0,
    )


def _extract(
    propagator: Propagator,
    headers: Mapping[str, bytes],
    event_id: str,
    handler_action: str,
    root_event_id: str,
    root_handler_action: str,
) -> Context:
    return propagator.extract(
        headers,
        Context(
            correlation_id="",
            event_id=event_id,
            handler_action=handler_action,
            root_event_id=root_event_id,
            root_handler_action=root_handler_action,
        ),
    )


def _broker_time(delivery: Delivery) -> Callable[[], float | None]:
    """Reads ``delivery.timestamp`` when called (a closure made outside :meth:`first`, whose
    ``delivery`` then stays a plain local)."""
    return lambda: delivery.timestamp


def _decode_with(codec: Codec, target: Any, body: bytes) -> Any:
    return codec.decode(body, target)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _header_time(raw: Any) -> datetime | None:
    """The producer's emit time from a ``HEXA_EVENT_TIME`` value; None when absent or
    nonsense: not digits, more than 15 of them, or not after the epoch (the broker's time
    stands in then)."""
    if raw is None:
        return None
    try:
        millis = int(raw) if 0 < len(raw) <= 15 else 0
    except (TypeError, ValueError):
        return None
    return _datetime(millis / 1000) if millis > 0 else None


def _datetime(seconds: float | None) -> datetime | None:
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def permanent_predicate(
    permanent: tuple[type[BaseException], ...] | PermanentPredicate | None,
) -> PermanentPredicate:
    """Normalise a subscription's ``permanent`` option; PermanentError always counts. One
    exception type counts as a tuple of it (called as a predicate, it would make every
    exception permanent); anything else but exception types or a callable is refused."""
    if permanent is None:
        return lambda exc: isinstance(exc, PermanentError)
    listed: Any = permanent
    if isinstance(listed, type) and issubclass(listed, BaseException):
        listed = (listed,)
    if isinstance(listed, tuple | list | set | frozenset):
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in listed):
            raise ConfigurationError(
                f"permanent must list exception types, got {permanent!r}: "
                "permanent=(MyError, OtherError), or a function of the exception"
            )
        types: tuple[type[BaseException], ...] = (PermanentError, *listed)
        return lambda exc: isinstance(exc, types)
    if not callable(permanent):
        raise ConfigurationError(
            f"permanent must be exception types or a function of the exception, got "
            f"{permanent!r}: permanent=(MyError,) or permanent=lambda exc: ..."
        )
    predicate = permanent
    return lambda exc: isinstance(exc, PermanentError) or bool(predicate(exc))
