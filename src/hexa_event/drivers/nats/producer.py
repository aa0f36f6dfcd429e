"""The emit side: confirmed JetStream publishes, many in flight, every wait bounded.

Each record is published with a reply subject on one inbox subscription of ours, and the
server's PubAck (or error) resolves that record's future. nats-py's ``publish_async`` is
not used: its futures never resolve when the server answers with an error (nats.py#985) or
an ack is lost across a reconnect; here every batch waits at most
``NatsOptions.publish_timeout`` and then fails with a retriable DriverError. Re-sending
is safe: ``Nats-Msg-Id`` (the event id and a content digest, see
:func:`.naming.message_id`) makes the stream store a re-sent record once within its
duplicate window.

At most ``NatsOptions.max_in_flight`` records await their PubAck at once per driver. A
record with a future ``not_before`` is published as a scheduled message on
``<prefix>_delayed.<id>`` whose target is the channel's subject: the server stores it
there at its due time (nats-server 2.12+ message schedules). With
``NatsOptions(partitions=N)`` the subject carries the record's partition
(:func:`.naming.partition_of`, Kafka's murmur2 of the key).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from ...driver import RawRecord, publish_outcome, refuse
from ...errors import DriverError, NotStoredError
from . import headers as wire
from .naming import channel_subject, consumer_name, message_id, partition_of
from .options import NatsOptions

_SCHEDULE = "Nats-Schedule"
_SCHEDULE_TARGET = "Nats-Schedule-Target"
_EARLY = 0.005
"""A record due within this many seconds is published at once."""
ERR_MESSAGE_TOO_LARGE = 10054
"""JetStream's "message size exceeds maximum allowed" (the stream's max_msg_size)."""
MAX_CONTROL_LINE = 4096
"""nats-server's default ``max_control_line``: the longest protocol line it reads."""
_CONTROL_LINE_ROOM = 48
"""``HPUB``, the reply token, the two sizes, spaces and CRLF, with room to spare."""


class NatsProducer:
    """Publishes records and awaits their PubAcks; owns one inbox subscription."""

    def __init__(self, options: NatsOptions) -> None:
        self._options = options
        self._prefix = options.subject_prefix
        self._partitions = options.partitions
        self._window = asyncio.Semaphore(options.max_in_flight)
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._tokens = itertools.count()
        self._inbox = ""
        self._nc: Client | None = None
        self.duplicates = 0
        """PubAcks that said "duplicate": records the stream already held (re-sends)."""

    async def start(self, nc: Client) -> None:
        """Subscribe the PubAck inbox on ``nc`` (once per connection)."""
        if self._nc is nc:
            return
        self._inbox = nc.new_inbox()
        await nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
        self._nc = nc

    async def _on_reply(self, msg: Msg) -> None:
        token = int(msg.subject.rpartition(".")[2])
        future = self._pending.pop(token, None)
        if future is None:
            return  # answered after its batch gave up waiting
        self._window.release()
        if future.done():
            return
        status = msg.headers.get("Status") if msg.headers else None
        if status == "503":
            future.set_exception(
                DriverError(
                    "no JetStream stream answered for this subject (no responders): stream "
                    f"{self._options.stream!r} has no leader (in a cluster, one is elected "
                    "within seconds of a server's loss) or was deleted (it is created again "
                    "on the next connect); re-sending is safe (Nats-Msg-Id)"
                )
            )
            return
        try:
            reply = json.loads(msg.data)
        except ValueError:
            future.set_exception(DriverError(f"unreadable PubAck {msg.data[:100]!r}"))
            return
        error = reply.get("error")
        if error:
            text = (
                f"JetStream refused a record: {error.get('description')} "
                f"(err_code {error.get('err_code')})"
            )
            if int(error.get("code", 500)) < 500:  # the stream said no: not stored
                too_big = int(error.get("err_code", 0)) == ERR_MESSAGE_TOO_LARGE
                future.set_exception(
                    NotStoredError(text, limit="max_msg_size")
                    if too_big
                    else NotStoredError(text, retriable=True)
                )
            else:
                future.set_exception(DriverError(text))
            return
        if reply.get("duplicate"):
            self.duplicates += 1
        future.set_result(None)

    def _message(self, record: RawRecord) -> tuple[str, dict[str, str]]:
        partition = partition_of(record, self._partitions) if self._partitions else None
        subject = channel_subject(self._prefix, record.channel, partition)
        msg_id = message_id(record)
        headers = wire.encode(record.key, record.headers, msg_id)
        delayed = self._options.delayed_publish and record.not_before
        if delayed and record.not_before > time.time() + _EARLY:
            due = datetime.fromtimestamp(record.not_before + 0.001, UTC)
            at = due.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            headers[_SCHEDULE] = f"@at {at}"
            headers[wire.ACCEPTED_AT] = str(int(time.time() * 1000))
            headers[_SCHEDULE_TARGET] = subject
            token = consumer_name(msg_id) if msg_id else f"n{next(self._tokens)}"
            subject = f"{self._options.delayed_prefix}.{token}"
        return subject, headers

    def check(self, nc: Client, records: Sequence[RawRecord]) -> list[tuple[str, dict[str, str]]]:
        """Subjects and headers of ``records``, checked against the server's limits before
        anything is sent (a record over them would make the server close the connection):
        headers + body within its ``max_payload``, the protocol line within its
        ``max_control_line``. Raises what :func:`~hexa_event.driver.refuse` makes."""
        prepared: list[tuple[str, dict[str, str]]] = []
        problems: dict[int, NotStoredError] = {}
        max_payload = nc.max_payload or 0
        for index, record in enumerate(records):
            try:
                subject, headers = self._message(record)
            except DriverError as exc:
                problems[index] = NotStoredError(str(exc))
                prepared.append(("", {}))
                continue
            prepared.append((subject, headers))
            line = len(subject.encode()) + len(self._inbox) + _CONTROL_LINE_ROOM
            if line > MAX_CONTROL_LINE:
                problems[index] = NotStoredError(
                    f"channel {record.channel[:60]!r}... ({len(record.channel)} characters) "
                    f"makes a NATS protocol line of {line} bytes, over the server's "
                    f"max_control_line ({MAX_CONTROL_LINE} bytes by default); use a shorter "
                    "channel name",
                    limit="max_control_line",
                )
                continue
            size = len(record.body) + wire.encoded_size(headers)
            if max_payload and size > max_payload:
                problems[index] = NotStoredError(
                    f"record of {size} bytes (body {len(record.body)}, headers "
                    f"{size - len(record.body)}) is over the NATS server's max_payload of "
                    f"{max_payload} bytes; send less (a reference to the data instead of the "
                    "data), or raise max_payload in the server's configuration",
                    limit="max_payload",
                )
        if problems:
            raise refuse(len(records), problems)
        return prepared

    async def publish(self, nc: Client, records: Sequence[RawRecord]) -> None:
        """Publish ``records``; return once the stream stored every one of them.

        Records over the server's limits are refused before anything is sent; a failure
        after sending says what became of each record (:func:`~hexa_event.driver.publish_outcome`).
        """
        await self.start(nc)
        prepared = self.check(nc, records)
        loop = asyncio.get_running_loop()
        tokens: list[int] = []
        futures: list[asyncio.Future[None]] = []
        failure: DriverError | None = None
        try:
            async with asyncio.timeout(self._options.publish_timeout):
                for record, (subject, headers) in zip(records, prepared, strict=True):
                    await self._window.acquire()
                    token = next(self._tokens)
                    future: asyncio.Future[None] = loop.create_future()
                    self._pending[token] = future
                    tokens.append(token)
                    futures.append(future)
                    await nc.publish(
                        subject, record.body, reply=f"{self._inbox}.{token}", headers=headers
                    )
                for future in futures:
                    if not future.done():
                        await asyncio.wait(futures)
                        break
        except TimeoutError:
            failure = DriverError(
                f"JetStream did not confirm {sum(not f.done() for f in futures)} of "
                f"{len(records)} records within {self._options.publish_timeout}s "
                "(NatsOptions.publish_timeout); re-sending them is safe (Nats-Msg-Id)"
            )
        except nats.errors.Error as exc:
            failure = DriverError(f"publishing to NATS failed: {exc!r}")
        finally:
            for token in tokens:
                if self._pending.pop(token, None) is not None:
                    self._window.release()
        errors: dict[int, DriverError] = {}
        for index, future in enumerate(futures):
            if not future.done():
                errors[index] = failure or DriverError("no PubAck")
            elif (error := future.exception()) is not None:
                errors[index] = error if isinstance(error, DriverError) else DriverError(str(error))
        for index in range(len(futures), len(records)):
            errors[index] = NotStoredError(
                f"not sent: {failure or 'an earlier record failed'}", retriable=True
            )
        if errors:
            raise publish_outcome(len(records), errors)

    def fail_pending(self, reason: str) -> None:
        """Fail every record still awaiting its PubAck (the driver is closing)."""
        for token in list(self._pending):
            future = self._pending.pop(token)
            self._window.release()
            if not future.done():
                future.set_exception(DriverError(reason))
