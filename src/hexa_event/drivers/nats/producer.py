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

from ...driver import RawRecord
from ...errors import DriverError
from . import headers as wire
from .naming import channel_subject, consumer_name, message_id, partition_of
from .options import NatsOptions

_SCHEDULE = "Nats-Schedule"
_SCHEDULE_TARGET = "Nats-Schedule-Target"
_EARLY = 0.005
"""A record due within this many seconds is published at once."""


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
                    "no JetStream stream holds this subject (no responders): was the stream "
                    f"{self._options.stream!r} deleted? It is created again on the next connect"
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
            retriable = int(error.get("code", 500)) >= 500
            future.set_exception(
                DriverError(
                    f"JetStream refused a record: {error.get('description')} "
                    f"(err_code {error.get('err_code')})",
                    retriable=retriable,
                )
            )
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

    async def publish(self, nc: Client, records: Sequence[RawRecord]) -> None:
        """Publish ``records``; return once the stream stored every one of them."""
        await self.start(nc)
        loop = asyncio.get_running_loop()
        tokens: list[int] = []
        futures: list[asyncio.Future[None]] = []
        try:
            async with asyncio.timeout(self._options.publish_timeout):
                for record in records:
                    subject, headers = self._message(record)
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
            raise DriverError(
                f"JetStream did not confirm {sum(not f.done() for f in futures)} of "
                f"{len(records)} records within {self._options.publish_timeout}s "
                "(NatsOptions.publish_timeout); re-sending them is safe (Nats-Msg-Id)"
            ) from None
        except nats.errors.Error as exc:
            raise DriverError(f"publishing to NATS failed: {exc!r}") from None
        finally:
            for token in tokens:
                if self._pending.pop(token, None) is not None:
                    self._window.release()
        for future in futures:
            error = future.exception()
            if error is not None:
                raise error

    def fail_pending(self, reason: str) -> None:
        """Fail every record still awaiting its PubAck (the driver is closing)."""
        for token in list(self._pending):
            future = self._pending.pop(token)
            self._window.release()
            if not future.done():
                future.set_exception(DriverError(reason))
