"""The emit side: an idempotent confluent-kafka producer (acks=all) behind an asyncio
bridge. ``produce`` and ``poll(0)`` run on the event loop, a loop timer serves the delivery
reports (docs/engines/kafka.md, "Internals"); only the ``flush`` at close runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from ...driver import RawRecord, publish_outcome
from ...errors import ClosedError, DriverError, NotStoredError

log = logging.getLogger(__name__)

_SERVE_INTERVAL = 0.002
"""Seconds between ``poll(0)`` calls on the loop while records await their reports (and
before a produce refused by a full local queue is tried again)."""


@dataclass(eq=False, slots=True)
class _Batch:
    """Counts the delivery reports a publish call waits for, and keeps each failure."""

    sink: KafkaProducer
    future: asyncio.Future[None]
    records: Sequence[RawRecord]
    remaining: int
    errors: dict[int, KafkaError] = field(default_factory=dict)
    """Index of each record that failed -> its error."""

    def on_delivery(self, index: int, err: KafkaError | None, msg: Any) -> None:
        """librdkafka's delivery report; runs on the thread that polls or flushes."""
        self.sink._reports.append((self, index, err))

    def failed(self, index: int, err: KafkaError) -> None:
        """On the loop: record ``index`` failed (reported so, or never sent); a topic refused
        as missing (deleted since it was provisioned) is forgotten."""
        self.errors[index] = err
        if err.code() in _MISSING:
            self.sink._forget(self.records[index].channel)

    def finish(self, scrub: Callable[[str], str]) -> None:
        """Once every record is reported (or refused locally): the future's outcome, an
        error per failed record when several were published."""
        if self.remaining == 0 and not self.future.done():
            if self.errors:
                failed = {i: delivery_error(err, scrub) for i, err in self.errors.items()}
                self.future.set_exception(publish_outcome(len(self.records), failed))
            else:
                self.future.set_result(None)


_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}
_NOT_STORED = {
    KafkaError.INVALID_RECORD,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.INVALID_MSG,
    KafkaError._INVALID_ARG,
}
"""Refusals of the record itself: sending it again cannot succeed."""


_MISSING = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}
"""Refusals for a topic that does not exist (one deleted since: its partitions vanished)."""


def delivery_error(err: KafkaError, scrub: Callable[[str], str]) -> DriverError:
    if err.code() in _MISSING:
        return NotStoredError(
            f"Kafka rejected the record: topic does not exist ({scrub(err.str())}); the next "
            "publish creates it with KafkaOptions(provision=True) (the default), else create it",
            retriable=True,  # not stored, and stored once the topic exists
        )
    if err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        return DriverError(
            "the Kafka producer closed before the broker acknowledged the record (within "
            "the close's flush, delivery_timeout): it may not be stored; publish it again "
            "with a new driver",
            retriable=True,
        )
    if err.code() in _TOO_LARGE:
        return NotStoredError(
            f"Kafka refused the record as too large ({err.name()}: {scrub(err.str())}); the "
            "limit is the producer's message.max.bytes (1,000,000 bytes by default) and the "
            "topic's max.message.bytes (the broker's message.max.bytes): send less, or raise "
            "both",
            limit="message.max.bytes",
        )
    if err.code() in _NOT_STORED:
        return NotStoredError(f"Kafka refused the record: {err.name()}: {scrub(err.str())}")
    if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return NotStoredError(
            f"Kafka refused the record: {err.name()}: {scrub(err.str())}; grant this "
            "principal WRITE on the topic",
            retriable=True,  # an ACL to fix, not a record to give up on
        )
    return DriverError(
        f"Kafka did not acknowledge the record: {err.name()}: {scrub(err.str())}",
        retriable=err.retriable() or err.code() == KafkaError._MSG_TIMED_OUT,
    )


class KafkaProducer:
    """One confluent-kafka Producer shared by every emitter and receiver of a driver."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        error_cb: Callable[[KafkaError], None],
        scrub: Callable[[str], str],
        forget: Callable[[str], object] = lambda topic: None,
    ) -> None:
        self._config = {**config, "error_cb": error_cb}
        self._scrub = scrub
        self._forget = forget  # told of a topic a record was refused for as missing
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending = 0
        self._reports: list[tuple[_Batch, int, KafkaError | None]] = []
        self._closed = False

    def _start(self) -> Producer:
        self._loop = asyncio.get_running_loop()
        try:
            self._producer = producer = Producer(self._config)
        except KafkaException as exc:
            raise DriverError(
                f"cannot create the Kafka producer: {self._scrub(exc.args[0].str())}",
                retriable=False,
            ) from None
        return producer

    def _serve(self) -> None:
        """On the loop: serve ready delivery reports (non-blocking ``poll(0)``)."""
        self._timer = None
        if (producer := self._producer) is None:
            return
        producer.poll(0)
        self._pending -= self._apply_reports()
        if self._pending > 0 and not self._closed and self._loop is not None:
            self._timer = self._loop.call_later(_SERVE_INTERVAL, self._serve)

    def _apply_reports(self) -> int:
        """On the loop: apply the delivery reports that came; returns how many."""
        reports, self._reports = self._reports, []
        for batch, index, err in reports:
            if err is not None:
                batch.failed(index, err)
            batch.remaining -= 1
            if batch.remaining == 0:
                batch.finish(self._scrub)
        return len(reports)

    async def publish(self, records: Sequence[RawRecord]) -> None:
        """Produce ``records`` and return once the broker acknowledged every one of them.

        The topics exist (the driver provisions before sending). Raises DriverError when
        the broker did not acknowledge a record in time.
        """
        if self._closed:
            raise ClosedError("the Kafka producer is closed; create a new driver")
        producer = self._producer or self._start()  # no await in between: started once
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[None] = loop.create_future()
        batch = _Batch(self, future, records, len(records))
        produce = producer.produce
        on_delivery = batch.on_delivery
        produced = 0
        for index, record in enumerate(records):
            headers: Any = record.headers
            if headers.__class__ is not dict:  # confluent-kafka takes a dict or a list only
                headers = dict(headers)  # (a delivery's PairHeaders, a read-only view)
            headers = headers or None
            while True:
                if self._closed:  # closed while this call waited for room: not sent
                    batch.remaining -= 1
                    batch.failed(index, KafkaError(KafkaError._PURGE_QUEUE))
                    break
                try:
                    produce(
                        record.channel,
                        value=record.body,
                        key=record.key.encode("utf-8", "surrogateescape"),
                        headers=headers,
                        on_delivery=partial(on_delivery, index),
                    )
                    produced += 1
                    break
                except BufferError:
                    # The local queue is full: serve reports, let librdkafka drain it.
                    self._pending += produced
                    produced = 0
                    self._serve()
                    await asyncio.sleep(_SERVE_INTERVAL)
                except KafkaException as exc:  # refused locally (too large...): not sent
                    batch.remaining -= 1
                    batch.failed(index, exc.args[0])
                    break
        self._pending += produced
        if self._timer is None and self._pending > 0:
            self._timer = loop.call_later(_SERVE_INTERVAL, self._serve)
        batch.finish(self._scrub)  # every record refused locally, or all reported already
        await future

    async def learn(self, topics: Sequence[str], within: float) -> None:
        """Ask for the metadata of ``topics`` (just created): librdkafka refuses a topic it
        saw missing (deleted since) until its next metadata refresh, minutes later."""
        if (producer := self._producer) is None:
            return  # not started: it asks when it is
        for topic in topics:
            with contextlib.suppress(KafkaException):  # the first produce asks again
                await asyncio.to_thread(producer.list_topics, topic, within)

    @staticmethod
    def _flush(producer: Producer, timeout: float) -> int:
        """Flush; records still unacknowledged then are purged, their reports (errors)
        served: nothing would serve them later, and their publish calls would wait."""
        remaining: int = producer.flush(timeout)
        if remaining:
            producer.purge()
            producer.poll(0)
        return remaining

    async def close(self, flush_timeout: float) -> None:
        """Flush what is queued (up to ``flush_timeout`` s) and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if (producer := self._producer) is None:
            return
        # No loop-side polling any more: flush's thread alone serves the last reports.
        remaining = await asyncio.to_thread(self._flush, producer, flush_timeout)
        self._apply_reports()
        if remaining:
            log.warning("Kafka producer closed with %d records undelivered", remaining)
