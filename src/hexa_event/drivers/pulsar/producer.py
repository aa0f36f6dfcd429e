"""Publishing: one cached producer per topic, at most ``max_in_flight`` records unconfirmed,
one wait per batch; and how a record's headers and body ride on a message (read back by
:mod:`.consumer`). Design and measurements: docs/engines/pulsar.md, "Inside the driver".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import pulsar

from ...driver import RawRecord, publish_outcome
from ...errors import ChannelNotFoundError, ClosedError, DriverError, NotStoredError
from ...numbers import epoch_seconds
from ...redaction import redact_url
from ..kit import goenvelope, textheaders
from .options import PulsarOptions

log = logging.getLogger(__name__)

EVENT_TIME_HEADER = "HEXA_EVENT_TIME"
"""The core's emit-time header (epoch milliseconds, text); it becomes the event time."""

NOT_BEFORE_PROPERTY = "hexa.not_before"
"""On delayed records: the not-before time (epoch ms). Pulsar may deliver a delayed message
up to one tick (1 s by default) early; the consumer hands such a message back until then."""
B64_PROPERTY = "hexa.b64"
"""Names (comma-separated) of properties whose values are base64 of non-text header bytes."""


def to_properties(headers: Mapping[str, bytes]) -> dict[str, str]:
    """Headers as Pulsar message properties (text), reversibly: non-text values base64 and
    listed in ``hexa.b64`` (``body="native"``; a Go-mode consumer reads these too)."""
    try:  # the common case: every value is UTF-8 text
        return {name: value.decode() for name, value in headers.items()}
    except UnicodeDecodeError:
        return textheaders.encode(headers.items(), listed_in=B64_PROPERTY)


_JOIN = b"".join


def message_properties(headers: Mapping[str, bytes]) -> Mapping[str, str | bytes]:
    """The properties of :func:`to_properties` as the message builder takes them: a dict
    whose values are all ASCII goes as it is (the binding takes a bytes value as its text's
    UTF-8, so the properties are the same without a new str per value), anything else as
    :func:`to_properties` makes it."""
    if headers.__class__ is dict and _JOIN(headers.values()).isascii():
        return headers
    return to_properties(headers)


def from_properties(props: Mapping[str, str]) -> dict[str, bytes]:
    """The inverse of :func:`to_properties`."""
    headers = textheaders.decode(props, listed_in=B64_PROPERTY)
    headers.pop(NOT_BEFORE_PROPERTY, None)
    return headers


def to_go_body(headers: Mapping[str, bytes], body: bytes) -> bytes:
    """Go hexa-event's JSON envelope around ``body`` and ``headers``."""
    return goenvelope.encode("", headers, body)


def from_go_body(data: bytes) -> tuple[dict[str, bytes], bytes] | None:
    """Headers and body out of a Go envelope, or None when ``data`` is not one."""
    opened = goenvelope.decode(data)
    return None if opened is None else (dict(opened[1]), opened[2])


def partition_for_key(key: str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: Java's ``String.hashCode`` of the key,
    sign bit cleared, modulo the count (the Java client's default routing), so Java and our
    producers agree whatever the client library version."""
    h = 0
    data = key.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


_BUILDER: Any = pulsar._pulsar.MessageBuilder  # type: ignore[attr-defined]
"""The binding's message builder: all of a message's properties in one call, no
per-argument type checks (the public ``send_async`` makes them)."""


def _route(message: pulsar.Message, partitions: int) -> int:
    key = message.partition_key()
    return partition_for_key(key, partitions) if key else 0


_OK = pulsar.Result.Ok.value


class _Batch:
    """Confirmations of one publish call, counted on pulsar-client's threads without a lock:
    ``list.append`` is atomic, and the callback and :meth:`expect` each write before they
    read, so at least one of them sees the batch complete (finishing twice is harmless)."""

    __slots__ = ("confirmed", "errors", "expected", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.expected = count
        self.confirmed: list[int] = []
        """Index in the chunk of each record the client answered for, in answer order."""
        self.errors: dict[int, str] = {}
        """Index in the chunk -> the client's result name, for records not confirmed."""

    def callback(self, index: int, result: Any, _msg_id: object) -> None:
        # Runs on a client I/O thread; an exception escaping it would end the process.
        try:
            if result.value != _OK:  # ints: comparing the enums costs microseconds
                self.errors[index] = getattr(result, "name", str(result))
            self.confirmed.append(index)
            if len(self.confirmed) >= self.expected:
                self.loop.call_soon_threadsafe(self._finish)
        except BaseException:  # pragma: no cover - the loop may be closed under us
            pass

    def expect(self, count: int) -> None:
        """Only ``count`` records were handed over: wait for their confirmations only."""
        self.expected = count
        if len(self.confirmed) >= count:
            self._finish()

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


TOO_BIG = "MessageTooBig"
_NOT_STORED = frozenset((TOO_BIG, "TopicTerminated", "AuthorizationError", "InvalidTopicName"))
_FOR_GOOD = frozenset((TOO_BIG, "TopicTerminated", "InvalidTopicName"))
"""Refusals that sending again cannot overcome (an authorization can be granted)."""


def record_error(result: str) -> DriverError:
    """The error of one record the client did not confirm (its ``Result`` name)."""
    if result == TOO_BIG:
        return NotStoredError(
            "Pulsar refused the record as too large (MessageTooBig): body and properties "
            "must fit the broker's maxMessageSize (5 MiB by default); send less, or raise "
            "maxMessageSize on the broker",
            limit="maxMessageSize",
        )
    if result in _NOT_STORED:
        return NotStoredError(
            f"Pulsar refused the record ({result})", retriable=result not in _FOR_GOOD
        )
    return DriverError(f"Pulsar did not confirm the record ({result}); it may or may not be stored")


class PulsarProducers:
    """The producers of one driver, created on first use of a topic and kept."""

    def __init__(self, client: pulsar.Client, options: PulsarOptions) -> None:
        self._client = client
        self._options = options
        self._producers: list[pulsar.Producer] = []
        self._senders: dict[str, Callable[..., None]] = {}  # the binding's send_async
        self._creating: dict[str, asyncio.Future[Callable[..., None]]] = {}  # under way
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    async def _sender(self, channel: str, partitions: int) -> Callable[..., None]:
        """The binding's ``send_async(message, callback)`` on ``channel``'s topic, its
        producer made once (the topic exists, with ``partitions`` partitions; 0: none)."""
        if (sender := self._senders.get(channel)) is not None:
            return sender
        if (pending := self._creating.get(channel)) is None:  # one attempt for every caller
            pending = asyncio.ensure_future(self._create(channel, partitions))
            self._creating[channel] = pending
            pending.add_done_callback(lambda _: self._creating.pop(channel, None))
        return await asyncio.shield(pending)  # a cancelled caller leaves it to the others

    async def _create(self, channel: str, partitions: int) -> Callable[..., None]:
        options, window = self._options, self._options.max_in_flight
        kwargs: dict[str, Any] = {
            "batching_enabled": True,
            # Key_Shared dispatches a batch by its first key: batch per key.
            "batching_type": pulsar.BatchingType.KeyBased,
            "batching_max_publish_delay_ms": options.batching_delay_ms,
            "send_timeout_millis": int(options.send_timeout * 1000),
            "max_pending_messages": window,
            "max_pending_messages_across_partitions": window,
            "block_if_queue_full": False,
            **({"message_router": _route} if partitions > 0 else {}),
            **options.producer_config,
        }
        topic = options.topic(channel)
        try:
            producer = await asyncio.to_thread(self._client.create_producer, topic, **kwargs)
        except pulsar.TopicNotFound:
            raise ChannelNotFoundError(
                channel, "create the topic, or let the driver create it (provision=True)"
            ) from None
        except pulsar.PulsarException as exc:
            raise DriverError(
                f"cannot create a Pulsar producer on {topic!r}: {type(exc).__name__} "
                f"({exc}); is the broker at {redact_url(options.service_url)} up?"
            ) from None
        if self._closed:
            await asyncio.to_thread(producer.close)
            raise ClosedError("the Pulsar driver is closed")
        self._producers.append(producer)
        self._senders[channel] = producer._producer.send_async
        return self._senders[channel]

    async def publish(
        self, records: Sequence[RawRecord], partitions: Mapping[str, int], *, text: bool = False
    ) -> None:
        """Send every record (``partitions``: each channel's partition count, its topic
        provisioned); return once the broker confirmed all, else raise DriverError (a
        :class:`~hexa_event.errors.PartialPublishError` with each record's outcome when
        several were given). ``text``: every header value is known to be UTF-8 (the sealer
        vouched for it), so the headers go to the message builder as they are."""
        window = self._options.max_in_flight
        for start in range(0, len(records), window):
            chunk = records[start : start + window]
            senders = {
                channel: await self._sender(channel, partitions[channel])
                for channel in dict.fromkeys(record.channel for record in chunk)
            }
            while self._in_flight and self._in_flight + len(chunk) > window:
                self._room.clear()
                await self._room.wait()
            self._in_flight += len(chunk)
            batch = _Batch(asyncio.get_running_loop(), len(chunk))
            try:
                # From a worker thread: each send_async gives up the GIL and waits to take it
                # back from the client's callback threads; the loop encodes the next batch.
                sent, refusal = await asyncio.to_thread(
                    self._hand_over, chunk, senders, batch, text
                )
                if refusal is not None:
                    batch.expect(sent)
                await batch.future
            finally:
                self._in_flight -= len(chunk)
                self._room.set()
            errors = {start + i: record_error(result) for i, result in batch.errors.items()}
            if refusal is not None:
                errors[start + sent] = refusal
            if errors:  # earlier chunks are stored; what follows a failure was not sent
                for i in range(start + sent, len(records)):
                    errors.setdefault(
                        i, NotStoredError("not sent: an earlier record failed", retriable=True)
                    )
                raise publish_outcome(len(records), errors)

    def _hand_over(
        self,
        chunk: Sequence[RawRecord],
        senders: dict[str, Any],
        batch: _Batch,
        text: bool = False,
    ) -> tuple[int, DriverError | None]:
        """``send_async`` the records of ``chunk`` (on a worker thread): how many were
        handed over, and why the client refused the next one on the spot (None: none was).
        ``text``: as for :meth:`publish`."""
        go_body = self._options.body == "go"
        callback, builder = batch.callback, _BUILDER
        now_ms = time.time_ns() // 1_000_000
        read: object = None  # the last emit time read: records sealed in one ms share it
        event_ms = now_ms
        for index, record in enumerate(chunk):
            headers = record.headers
            raw_time = headers.get(EVENT_TIME_HEADER)
            if raw_time is not read:
                emitted = epoch_seconds(raw_time)
                event_ms = now_ms if emitted is None else round(emitted * 1000)
                read = raw_time
            props: Mapping[str, str | bytes]
            if go_body:
                body, props = to_go_body(headers, record.body), {}
            else:
                body = record.body
                props = headers if text else message_properties(headers)
            message = builder()
            message.content(body)
            message.event_timestamp(event_ms)
            if record.key:
                message.partition_key(record.key)
            if (deliver_at := int(record.not_before * 1000)) > now_ms:  # else: at once
                message.deliver_at(deliver_at)
                props = {**props, NOT_BEFORE_PROPERTY: str(deliver_at)}  # not the record's
            if props:
                message.properties(props)
            try:
                senders[record.channel](message.build(), partial(callback, index))
            except pulsar.PulsarException as exc:
                name = type(exc).__name__
                if name in _NOT_STORED:
                    return index, record_error(name)
                why = f"Pulsar refused a send ({name}: {exc}); not sent"
                return index, NotStoredError(why, retriable=True)
        return len(chunk), None

    async def close(self) -> None:
        """Flush and close every producer. Idempotent."""
        self._closed = True
        producers, self._producers = self._producers, []
        self._senders.clear()
        for producer in producers:
            try:
                await asyncio.to_thread(producer.close)
            except pulsar.PulsarException as exc:
                log.debug("closing a Pulsar producer: %s", exc)
