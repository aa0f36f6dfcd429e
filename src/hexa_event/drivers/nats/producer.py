"""The emit side: confirmed JetStream publishes, many in flight, every wait bounded; each
record's PubAck resolves a future of ours (nats-py's ``publish_async`` futures never
resolve on an error reply, nats.py#985). How: docs/engines/nats.md, "Internals"."""

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
        self._window = asyncio.Semaphore(options.max_in_flight)
        self._pending: dict[int, asyncio.Future[DriverError | None]] = {}
        """Token -> the future of a record's PubAck: None once stored, else what went wrong."""
        self._tokens = itertools.count()
        self._inbox = ""
        self._nc: Client | None = None
        self.duplicates = 0
        """PubAcks that said "duplicate": records the stream already held (re-sends)."""

    async def _on_reply(self, msg: Msg) -> None:
        if (future := self._pending.pop(int(msg.subject.rpartition(".")[2]), None)) is None:
            return  # answered after its batch gave up waiting
        self._window.release()  # a pending future is never done: only its pop resolves it
        future.set_result(self._refusal(msg))

    def _refusal(self, msg: Msg) -> DriverError | None:
        """What the PubAck ``msg`` says went wrong (None: stored; duplicates counted)."""
        if msg.headers and msg.headers.get("Status") == "503":
            return DriverError(
                "no JetStream stream answered for this subject (no responders): stream "
                f"{self._options.stream!r} has no leader (in a cluster, one is elected "
                "within seconds of a server's loss) or was deleted (it is created again "
                "on the next connect); re-sending is safe (Nats-Msg-Id)"
            )
        try:
            reply = json.loads(msg.data)
        except ValueError:
            return DriverError(f"unreadable PubAck {msg.data[:100]!r}")
        error = reply.get("error")
        if not error:
            self.duplicates += bool(reply.get("duplicate"))
            return None
        text = (
            f"JetStream refused a record: {error.get('description')} "
            f"(err_code {error.get('err_code')})"
        )
        if int(error.get("code", 500)) >= 500:
            return DriverError(text)
        if int(error.get("err_code", 0)) == ERR_MESSAGE_TOO_LARGE:  # the stream said no
            return NotStoredError(text, limit="max_msg_size")
        return NotStoredError(text, retriable=True)

    def _message(self, record: RawRecord) -> tuple[str, dict[str, str]]:
        partitions = self._options.partitions
        partition = partition_of(record, partitions) if partitions else None
        subject = channel_subject(self._options.subject_prefix, record.channel, partition)
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
        """Subjects and headers of ``records``; what :func:`~hexa_event.driver.refuse` makes
        for records over the server's ``max_payload`` or ``max_control_line``."""
        prepared: list[tuple[str, dict[str, str]]] = []
        problems: dict[int, NotStoredError] = {}
        max_payload = nc.max_payload or 0
        for index, record in enumerate(records):
            try:
                subject, headers = self._message(record)
            except DriverError as exc:
                problems[index] = NotStoredError(str(exc))
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
        """Publish ``records``; return once the stream stored every one of them (a failure
        says what became of each: :func:`~hexa_event.driver.publish_outcome`)."""
        if self._nc is not nc:  # the PubAck inbox, once per connection
            self._inbox = nc.new_inbox()
            await nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
            self._nc = nc
        prepared = self.check(nc, records)
        loop = asyncio.get_running_loop()
        sent: dict[int, asyncio.Future[DriverError | None]] = {}  # in record order
        failure: DriverError | None = None
        try:
            async with asyncio.timeout(self._options.publish_timeout):
                for record, (subject, headers) in zip(records, prepared, strict=True):
                    await self._window.acquire()
                    token = next(self._tokens)
                    sent[token] = self._pending[token] = loop.create_future()
                    await nc.publish(
                        subject, record.body, reply=f"{self._inbox}.{token}", headers=headers
                    )
                if not all(future.done() for future in sent.values()):
                    await asyncio.wait(sent.values())
        except TimeoutError:
            failure = DriverError(
                f"JetStream did not confirm {sum(not f.done() for f in sent.values())} of "
                f"{len(records)} records within {self._options.publish_timeout}s "
                "(NatsOptions.publish_timeout); re-sending them is safe (Nats-Msg-Id)"
            )
        except nats.errors.Error as exc:
            failure = DriverError(f"publishing to NATS failed: {exc!r}")
        finally:
            for token in sent:
                if self._pending.pop(token, None) is not None:
                    self._window.release()
        errors: dict[int, DriverError] = {}
        for index, future in enumerate(sent.values()):
            error = future.result() if future.done() else failure or DriverError("no PubAck")
            if error is not None:
                errors[index] = error
        for index in range(len(sent), len(records)):
            errors[index] = NotStoredError(
                f"not sent: {failure or 'an earlier record failed'}", retriable=True
            )
        if errors:
            raise publish_outcome(len(records), errors)

    def fail_pending(self, reason: str) -> None:
        """Fail every record still awaiting its PubAck (the driver is closing)."""
        for token in list(self._pending):
            self._pending.pop(token).set_result(DriverError(reason))
            self._window.release()
