"""One member of a group's durable pull consumer: it pulls, hands out, settles, gives back.

``fetch`` hands records out in stream order and a key's later records never overtake a
nacked or lost one at this member (:mod:`.gaps`); ``settle`` returns once
the server received the verdicts; ``close`` and ``revoke`` give back, in stream order, what
the member still holds. Pulls, in-progress, hand-over: docs/engines/nats.md, "Internals".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub

from ...driver import (
    ALL_CHANNELS,
    Delivery,
    Outcome,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from ...errors import DriverError
from ...numbers import whole_number
from ..kit.buffer import DeliveryBuffer
from ..kit.driver import channel_pattern
from . import headers as wire
from .client import confirm, retrying, stop_interest, stopped, woken
from .gaps import KeyGate, LostInTransit
from .naming import subject_channel
from .options import NatsOptions, NatsSubscriptionOptions
from .streams import (
    ERR_CONSUMER_NOT_FOUND,
    ERR_STREAM_NOT_FOUND,
    PRIORITY_GROUP,
    JetStreamApi,
    JetStreamApiError,
    consumer_config,
)

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_PIN_ID = "Nats-Pin-Id"
_ACK = b"+ACK"
_NAK = b"-NAK"
_TERM = b"+TERM"
_WPI = b"+WPI"
_LAG_REFRESH = 5.0
_RETRY_PAUSE = 1.0
_PROBE = 0.5
"""Seconds the answer to a probe (a pull that is answered at once) is awaited."""
_GONE = (ERR_CONSUMER_NOT_FOUND, ERR_STREAM_NOT_FOUND)


class NatsDelivery(Delivery):
    """A record from the consumer; ``coordinates`` is ``<stream>-<stream sequence>``,
    ``seq`` the stream sequence, ``cseq`` the delivery's consumer sequence (redeliveries
    have their own), ``owner`` the subscription its settlement goes back to, ``native`` the
    nats-py ``Msg``."""

    __slots__ = ("_touched", "cseq", "gate_key", "native", "owner", "seq")

    def __init__(
        self, owner: NatsSubscription, record: RawRecord, msg: Msg, meta: _Meta, ts: float
    ) -> None:
        count, self.seq, self.cseq, _ = meta
        super().__init__(
            record, coordinates=f"{owner._stream}-{self.seq}", delivery_count=count, timestamp=ts
        )
        self.native: Msg = msg
        self._touched = time.monotonic()
        self.owner = owner
        self.gate_key = (record.channel, record.key)


class Link(Protocol):
    """What a member needs of its driver (the driver itself)."""

    options: NatsOptions
    connection_error: str
    """What is wrong with the connection now (empty when connected)."""

    def filters(self, spec: SubscriptionSpec, partition: int | None = None) -> list[str]: ...

    async def repair(self) -> None:
        """Create the stream (and bucket) again: the server lost them."""


Handout = DeliveryBuffer[object, NatsDelivery]
"""What ``fetch`` waits on: a member's own, or the one its partitions share."""


def _nak(delay: float) -> bytes:
    if delay > 0:
        return _NAK + b" " + json.dumps({"delay": int(delay * _NS)}).encode()
    return _NAK


_Meta = tuple[int, int, int, float]


def _instant(stamp: object) -> datetime | None:
    """A time the server gives in RFC 3339 (``2026-12-07T00:16:17.07003Z``); None when it is
    not one with a time zone."""
    try:
        when = datetime.fromisoformat(str(stamp))  # JSON: text, else a number or null
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _metadata(reply: str) -> _Meta:
    """Delivery count, stream sequence, consumer sequence and timestamp (s) of an ack
    subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``, or
    the newer form with domain and account hash after ``$JS.ACK`` and a token at the end.
    Raises ValueError (also for a count or sequence below 1, or a negative time: no server
    sends them), IndexError or (a timestamp of hundreds of digits) OverflowError."""
    tokens = reply.split(".")
    at = 4 if len(tokens) >= 12 else 2
    count, seq, cseq, ts = map(int, tokens[at + 2 : at + 6])
    if min(count, seq, cseq) < 1 or ts < 0:
        raise ValueError(reply)
    return count, seq, cseq, ts / _NS


class NatsSubscription(Subscription):
    """A member of the durable pull consumer ``consumer`` on ``stream``."""

    def __init__(
        self,
        link: Link,
        nc: Client,
        api: JetStreamApi,
        spec: SubscriptionSpec,
        options: NatsSubscriptionOptions,
        consumer: str,
        partition: int | None = None,
        ready: Handout | None = None,
    ) -> None:
        self._link = link
        self._nc = nc
        self._api = api
        self._stream = link.options.stream
        self._consumer = consumer
        filters = link.filters(spec, partition)
        threshold = link.options.consumer_inactive_threshold
        self._config = consumer_config(consumer, filters, spec.start, options, threshold)
        self._prefix = link.options.subject_prefix
        self._options = options
        self._ephemeral = spec.ephemeral and partition is None  # a partition's: the member's
        self._channels = frozenset(spec.channels)
        self._pattern = channel_pattern(spec)
        self._max_batch = 0  # the consumer's max_batch, once a pull was refused for it
        self.set_limit(spec.prefetch)
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{consumer}"
        self._redelivered = False
        self._pin: str | None = None  # with failover: our pin id while this member is active
        self._buffer: deque[NatsDelivery] = deque()
        self._gate: KeyGate[NatsDelivery] = KeyGate(options.ack_wait)
        # Only with one member pulling (pinned) is a gap in the consumer sequence a loss.
        margin = max(1.0, 2 * options.heartbeat)
        self._gaps = LostInTransit[NatsDelivery](options.ack_wait, margin, options.failover)
        self._reconnects = int(nc.stats.get("reconnects", 0))
        self._ungated = frozenset(spec.retry_channels)
        self._unsettled: dict[str, NatsDelivery] = {}
        self._shared = ready is not None
        self._ready: Handout = (
            ready if ready is not None else DeliveryBuffer(lambda _, count: self.take(count))
        )
        self._api_timeout = options.heartbeat * 5
        self._settled = asyncio.Event()
        # From a stop (close or hand-over) on: the arrivals (seq, reply), given back.
        self._late: list[tuple[int, str]] | None = None
        self._wake = asyncio.Event()
        self._inbox = ""
        self._sub: NatsSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._asked = 0
        self._pull_until = 0.0
        self._last_seen = time.monotonic()
        self._served_at = 0.0  # when the consumer last answered a pull (not 503)
        self._silent_since: float | None = None  # since when pulls get no heartbeat
        self._no_responders = 0  # pulls answered 503 in a row
        self._check_consumer = False
        self._error = ""
        self._refused = ""  # why the consumer refuses this member's pulls, if it does
        self._paused_until = 0.0  # no pull before (after a refused one)
        self.fatal: DriverError | None = None  # what stopped this member, if anything
        self._info: dict[str, Any] = {}  # the consumer's info at the last lag check
        self._lag_at = 0.0
        self._lag_task: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[None] | None = None  # the consumer check under way
        self._delivered_at = time.monotonic()  # when a record last arrived
        self._closed = False
        self._given_back = False  # by close: what still arrives goes back at once

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create or update the consumer, subscribe the inbox, start pulling."""
        self._info = await self._api.ensure_consumer(self._stream, self._consumer, self._config)
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_message, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        # The first pull is registered before subscribe returns, so a member that has
        # joined takes its share of what is published next.
        await self._pull()
        with contextlib.suppress(TimeoutError):
            await confirm(self._nc, self._api_timeout)
        self._task = asyncio.create_task(
            self._run(), name=f"hexa-event nats pull {self._stream}/{self._consumer}"
        )

    async def close(self) -> None:
        """Stop pulling, nak what this member still holds, leave. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._late = [] if self._late is None else self._late
        if self._shared:
            self._ready.wake()
        else:
            self._ready.close()
        self._wake.set()
        await asyncio.shield(self._close())  # to the end, also when the caller is cancelled

    async def _close(self) -> None:
        tasks = [task for task in (self._task, self._lag_task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._give_back([d for d in self._unsettled.values() if d.outcome is None])
        self._given_back = True
        if self._pin is not None and not self._nc.is_closed:
            # Hand the group over to a standby member now, not after failover_timeout; the
            # records given back above are redelivered to it before any later record.
            with contextlib.suppress(DriverError):
                await self._api.request(
                    f"CONSUMER.UNPIN.{self._stream}.{self._consumer}", {"group": PRIORITY_GROUP}
                )
        if self._ephemeral and not self._nc.is_closed:
            await self._api.delete_consumers(self._stream, [self._consumer])

    async def revoke(self, within: float) -> None:
        """Hand the consumer over to its partition's new owner: stop pulling, give back
        what was not handed out (held records keep what remains of their key's nack delay),
        wait up to ``within`` seconds for the rest to be settled, then :meth:`close`."""
        if self._late is not None:  # closing or handing over already
            return
        self._late = []
        self._wake.set()
        await self._give_back((), delayed=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._unsettled:
                    self._settled.clear()
                    await self._settled.wait()
        if self._unsettled:
            log.warning(
                "consumer %s handed over with %d deliveries still unsettled after %.1fs: "
                "they are given back (the new owner may run them again)",
                self._consumer,
                len(self._unsettled),
                within,
            )
        await self.close()

    async def _give_back(self, unsettled: Sequence[NatsDelivery], delayed: bool = False) -> None:
        """Stop the inbox, then nak in stream order what was on its way, buffered, held by
        the gates and ``unsettled`` (``delayed``: held records keep their remaining delay);
        returns once the server applied every nak (docs: "Internals", giving back)."""
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            # What was already on its way runs through the callback into ``_late``.
            await stop_interest(self._nc, sub, self._api_timeout, self._options.ack_wait)
        late, self._late = self._late or [], []
        now = time.monotonic()
        held = [(d, 0.0) for d in (*self._buffer, *unsettled)]
        held.extend(self._gate.give_back(now))
        held.extend(self._gaps.give_back(now))
        self._buffer.clear()
        for delivery, _ in held:
            self._unsettled.pop(delivery.native.reply, None)
        back = [(seq, reply, _NAK) for seq, reply in late]
        back.extend((d.seq, d.native.reply, _nak(t if delayed else 0)) for d, t in held)
        if not back or self._nc.is_closed:
            return
        # The last nak is a request, answered once all were applied: then unpinning is safe.
        ordered = sorted(back)
        with contextlib.suppress(Exception):
            for _, reply, verdict in ordered[:-1]:
                await self._nc.publish(reply, verdict)
            _, reply, verdict = ordered[-1]
            await self._nc.request(reply, verdict, timeout=self._api_timeout)

    def set_limit(self, limit: int) -> None:
        """Records this member may hold from this consumer at once (its share of prefetch)."""
        self._limit = limit = max(1, limit)
        self._batch = min(limit, self._options.batch or limit, self._max_batch or limit)

    def on_connection_closed(self, reason: str) -> None:
        """The connection closed for good: ``fetch`` raises a non-retriable DriverError."""
        self._failed(DriverError(reason, retriable=False))
        self._wake.set()

    def _failed(self, error: DriverError) -> None:
        if self.fatal is None:
            self.fatal = error
            self._ready.fail(error)

    def renew(self) -> None:
        """The connection came back (the driver's reconnect callback): renew the pull and
        check the consumer on the new connection (docs: "Failures and recovery")."""
        self._pull_gone(lost=self._reconnected())
        if self._checking is not None:
            self._checking.cancel()

    def _reconnected(self) -> bool:
        """True the first time a reconnect of the client is noticed: by the driver's
        callback or by a delivery on the new connection, whichever comes first (nats-py
        delivers before it runs the callback). One reconnect is one disruption: suspected
        twice, the next gap after the first delivery (another member's deliveries while
        the pin was elsewhere) would be taken for deliveries lost."""
        reconnects = int(self._nc.stats.get("reconnects", 0))
        if reconnects == self._reconnects:
            return False
        self._reconnects = reconnects
        return True

    def _pull_gone(self, lost: bool = True) -> None:
        """The pull vanished (a reconnect, a 409/503 status, no heartbeat): none is left,
        check the consumer; with ``lost``, deliveries on their way may be lost."""
        self._asked = 0
        self._check_consumer = True
        if lost:
            self._gaps.suspect()
        self._wake.set()

    # -- the contract ---------------------------------------------------------------------------

    def take(self, max_count: int) -> list[NatsDelivery]:
        """Up to ``max_count`` buffered deliveries, handed out now (never waits)."""
        if not self._buffer or self._late is not None:
            return []
        if self._redelivered:
            # The server redelivers given-back records in no particular order: stream
            # order again (a key's records keep their publish order).
            self._buffer = deque(sorted(self._buffer, key=lambda d: d.seq))
            self._redelivered = False
        out = [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]
        self._unsettled.update((delivery.native.reply, delivery) for delivery in out)
        return out

    async def fetch(self, max_count: int) -> Sequence[Delivery]:
        return await self._ready.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Send the verdicts; raises a retriable DriverError when the server did not confirm
        them, a non-retriable one once the connection is closed for good (the driver closed
        under the receiver: nothing can be written, the server delivers them again)."""
        nc = self._nc
        if nc.is_closed:
            raise DriverError(
                f"the NATS connection is closed: {len(deliveries)} settlements cannot be "
                "written (the server delivers those records again)",
                retriable=False,
            )
        try:
            for delivery in deliveries:
                assert isinstance(delivery, NatsDelivery)
                await nc.publish(delivery.native.reply, self._verdict(delivery))
            await confirm(nc, self._api_timeout)
        except (TimeoutError, nats.errors.Error) as exc:
            raise DriverError(
                f"could not confirm {len(deliveries)} settlements with NATS: {exc!r} "
                "(they are sent again)"
            ) from None
        now = time.monotonic()
        released: list[NatsDelivery] = []
        for delivery in deliveries:
            assert isinstance(delivery, NatsDelivery)
            self._unsettled.pop(delivery.native.reply, None)
            if delivery.record.channel in self._ungated:
                continue
            if delivery.outcome is Outcome.NACK and not self._final(delivery):
                self._gate.nacked(delivery, delivery.delay, now)
            else:
                released.extend(self._gate.done(delivery))
        self._release(released)
        if not self._unsettled:
            self._settled.set()
        self._wake.set()

    def _verdict(self, delivery: NatsDelivery) -> bytes:
        if delivery.outcome is Outcome.ACK:
            return _ACK
        if self._final(delivery):
            log.error(
                "record %s of consumer %s was nacked on its delivery %d of max_deliver=%d: "
                "the server will not deliver it again, so it is terminated (it stays in "
                "the stream; raise NatsSubscriptionOptions.max_deliver or use -1)",
                delivery.coordinates,
                self._consumer,
                delivery.delivery_count,
                self._options.max_deliver,
            )
            return _TERM
        return _nak(delivery.delay)

    def _final(self, delivery: NatsDelivery) -> bool:
        """The server will not deliver this record again (``max_deliver`` reached)."""
        limit = self._options.max_deliver
        return limit > 0 and delivery.delivery_count >= limit

    def status(self) -> SubscriptionStatus:
        now = time.monotonic()
        error = (
            self._link.connection_error
            or self._error
            or self._refused
            or self._silent(now)
            or self._stalled(now)
        )
        if held_back := self._gaps.describe(now):  # said even beside another problem
            held_back = f"JetStream consumer {self._consumer}: {held_back}"
            error = f"{error}; {held_back}" if error else held_back
        held = not self._options.failover or self._pin is not None
        assignment = (f"{self._stream}/{self._consumer}",) if held else ()
        error = str(self.fatal) if self.fatal is not None else error
        lag = self._pending() + self._acks() if self._info else None
        return SubscriptionStatus(assignment=assignment, error=error, lag=lag)

    def _pending(self) -> int:
        return int(self._info.get("num_pending", 0))

    def _acks(self) -> int:
        return int(self._info.get("num_ack_pending", 0))

    async def lag(self) -> Mapping[str, int] | None:
        """The consumer's pending plus ack-pending records: one figure for all channels."""
        return {ALL_CHANNELS: await self._api.pending(self._stream, [self._consumer])}

    def _silent(self, now: float) -> str:
        """Why pulls get no answer, until one gets one (or none is needed)."""
        if self._no_responders > 1 and self._checking is None:
            return (
                f"consumer {self._consumer} answers no pull (503 no responders, "
                f"{self._no_responders} in a row) though the JetStream API finds it; "
                "pausing between pulls"
            )
        if self._no_responders:
            return f"consumer {self._consumer} does not answer (503 no responders); checking it"
        if self._silent_since is None:
            return ""
        return (
            f"no heartbeat from consumer {self._consumer} for {now - self._silent_since:.1f}s; "
            "renewing the pull"
        )

    def _stalled(self, now: float) -> str:
        """Why this member receives nothing though records wait for it ("" when it does not
        stall): its pull loop stopped, or nothing came for longer than a takeover takes."""
        if self._late is not None:  # stopping
            return ""
        if loop := stopped(self._task, f"the pull loop of consumer {self._consumer}"):
            return loop  # (a fatal error, if any, is said instead)
        quiet = now - self._delivered_at
        standby = self._options.failover and not self._shared and self._pin is None
        limit = self._options.max_ack_pending
        if (
            standby
            or self._pending() <= 0
            or 0 < limit <= self._acks()
            or self._held() >= self._limit
            or now - self._lag_at > 3 * _LAG_REFRESH
            or quiet < self._options.takeover_after + 2 * self._options.heartbeat
        ):
            return ""
        pin = str((self._info.get("priority_groups") or [{}])[0].get("pinned_client_id", ""))
        whose = f"another member ({pin})" if pin and pin != self._pin else "this member"
        return (
            f"consumer {self._consumer} stalls: {self._pending()} records wait at the server "
            f"but none arrived for {quiet:.0f}s (pinned to {whose if pin else 'no member'}, "
            f"{self._asked} asked for)"
        )

    # -- receiving ------------------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        self._last_seen = time.monotonic()
        if self._error and not self._check_consumer:
            self._error = ""
        reply = msg.reply
        if not reply:
            self._on_status(msg)
            return
        self._answered()
        self._served_at = self._delivered_at = self._last_seen
        self._refused = ""
        self._asked = max(0, self._asked - 1)
        if self._options.failover and msg.headers:
            self._pin = msg.headers.get(_PIN_ID, self._pin)
        try:
            meta = _metadata(reply)
        except (ValueError, IndexError, OverflowError):
            log.warning("ignored a message with an unexpected reply subject %r", reply)
            return
        if self._late is not None:  # closing or handing over
            if self._given_back:  # closed: it goes back at once (its inbox lingers)
                with contextlib.suppress(nats.errors.Error):
                    await self._nc.publish(reply, _NAK)
            else:
                self._late.append((meta[1], reply))  # given back in order with the rest
            return
        now = time.monotonic()
        if self._reconnected():  # the driver's renew may not have run yet
            self._gaps.suspect()
        channel = subject_channel(self._prefix, msg.subject)
        if (
            self._pattern is not None
            and channel not in self._channels
            and self._pattern.fullmatch(channel) is None
        ):
            await self._nc.publish(reply, _ACK)  # not for this subscription
            self._gaps.seen(meta[2], now)
            self._wake.set()
            return
        key, headers, accepted_at = wire.decode(msg.headers)
        record = RawRecord(channel, key, headers, msg.data)
        delivery = NatsDelivery(self, record, msg, meta, accepted_at or meta[3])
        self._hand_out(self._gaps.admit(delivery, now))

    def _hand_out(self, arrived: list[NatsDelivery]) -> None:
        """Buffer what may be handed out now (the key gate keeps what must wait)."""
        ready = [d for d in arrived if d.record.channel in self._ungated or self._gate.admit(d)]
        self._redelivered |= any(d.delivery_count > 1 for d in ready)
        self._release(ready)

    def _release(self, ready: list[NatsDelivery]) -> None:
        if ready:
            self._buffer.extend(ready)
            self._ready.wake()

    def _answered(self) -> None:
        """The server answers this member's pulls (or none is out): they are not silent."""
        self._silent_since = None
        self._no_responders = 0

    def _held(self) -> int:
        """Records this member holds: buffered, unsettled, or held back by the gates."""
        return len(self._buffer) + len(self._unsettled) + len(self._gate) + len(self._gaps)

    def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status, about = headers.get("Status", ""), headers.get("Description", "")
        pending = headers.get("Nats-Pending-Messages")
        if status != "503":
            self._answered()
            self._served_at = time.monotonic()
        if status == "100":
            return  # idle heartbeat: the pull is alive
        self._wake.set()
        if status == "409" and about.startswith("Exceeded Max"):
            self._refuse(about)
            return
        left = whole_number(pending, 0) if pending else None
        if status in ("408", "409") and left is not None:
            self._asked = max(0, self._asked - left)  # what that pull left unserved
        elif status in ("404", "408", "423", "503") or (status == "409" and pending is None):
            self._asked = 0  # no pull is left
        if status == "409" and "Leadership Change" in about:
            self._gaps.suspect()  # deliveries of the old consumer leader may be lost
        if status == "423":  # another member is pinned now, or our pin expired
            self._pin = None
        elif status == "503":
            self._pull_gone()
            self._no_responders += 1
            if self._no_responders > 1:  # again after a check: pull again after a pause
                self._paused_until = time.monotonic() + _RETRY_PAUSE
        elif status == "409" and "Consumer Deleted" in about:
            self._pull_gone()
            self._error = f"consumer {self._consumer} was deleted; creating it again"
        elif status == "409" and pending is None:
            log.info("pull on %s ended: 409 %s", self._consumer, about)
        elif status not in ("404", "408", "409"):
            log.warning("pull on %s: status %s %s", self._consumer, status, about)

    def _refuse(self, about: str) -> None:
        """The consumer refused a pull (409 ``Exceeded MaxRequestBatch of 5``, ...): pull
        fewer at a time, or say why and pause (docs: "Failures and recovery")."""
        self._asked = 0
        most = whole_number(about.removeprefix("Exceeded MaxRequestBatch of "), 1)
        if about.startswith("Exceeded MaxRequestBatch of ") and most and most < self._batch:
            self._max_batch = most
            self.set_limit(self._limit)
            log.warning(
                "consumer %s takes at most %d records a pull (its max_batch): pulling that many",
                self._consumer,
                most,
            )
            return
        self._paused_until = time.monotonic() + _RETRY_PAUSE
        self._refused = (
            f"consumer {self._consumer} refuses this member's pulls (409 {about[:100]}): let "
            f"it take pulls of {self._batch} records that wait "
            f"{self._options.pull_expires:.0f}s (its max_batch, max_expires, max_bytes, "
            "max_waiting: NatsSubscriptionOptions.consumer_config, or set on the server), or "
            "lower NatsSubscriptionOptions.batch or heartbeat"
        )

    # -- the pull loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            try:
                if self._check_consumer:
                    if not await self._checked():
                        continue  # renewed meanwhile: again, on the new connection
                    self._check_consumer = False
                    self._error = ""
                    self._asked = 0
                await self._pull()
                await woken(self._wake, _PROBE if self._probing() else self._options.heartbeat)
                self._watch()
                self._release(self._gate.expire(time.monotonic()))
                self._hand_out(self._gaps.expire(time.monotonic()))
                await self._keep_alive()
                self._check_lag()
            except Exception as exc:  # the loop must not die silently: say so, go on
                if isinstance(exc, JetStreamApiError) and exc.code == 400:
                    refused = f"consumer {self._stream}/{self._consumer} was refused: {exc}"
                    fix = f"{refused}; fix NatsSubscriptionOptions"
                    self._failed(DriverError(fix, retriable=False))
                    return
                self._error = retrying(f"JetStream consumer {self._consumer}", exc)
                await woken(self._wake, _RETRY_PAUSE)

    async def _checked(self) -> bool:
        """:meth:`_recreate` as a task :meth:`renew` may cancel (False when it did), with a
        probe every :data:`_PROBE` meanwhile: a consumer without a leader answers no
        request, so its check waits ``request_timeout``, but a probe gets ``503`` at once
        (said in health); one the consumer answers proves it there and led, and the check
        is dropped (docs: "Failures and recovery")."""
        began = time.monotonic()
        self._checking = check = asyncio.create_task(self._recreate())
        try:
            while not check.done():
                if self._served_at > began:
                    check.cancel()
                    return True
                self._asked = 0  # a probe is answered at once, or never
                await self._pull()
                await asyncio.wait({check}, timeout=_PROBE)
            await check
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed or (task is not None and task.cancelling()):
                raise  # the loop itself is cancelled
            return False
        finally:
            self._checking = None
            check.cancel()  # (done by now, unless a probe failed)
        return True

    async def _recreate(self) -> None:
        """Check the consumer; one that is gone is created again where the group was (its
        delivery numbers start anew, and with a stream made again its stream sequences)."""
        try:
            await self._api.consumer_info(self._stream, self._consumer)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                log.warning("stream %s is gone (server lost its store?); creating it", self._stream)
                await self._link.repair()
                config = self._starting("all", "the start of the stream made again")
            elif exc.err_code == ERR_CONSUMER_NOT_FOUND:
                config = await self._resumed()
            else:
                raise
            self._info = await self._api.ensure_consumer(self._stream, self._consumer, config)
            self._hand_out(self._gaps.restart())
        else:  # there: updated if it differs
            self._info = await self._api.ensure_consumer(self._stream, self._consumer, self._config)

    async def _resumed(self) -> dict[str, Any]:
        """The config to create the vanished consumer with: after the group's ack floor as
        last seen, or from the start of a stream newer than that consumer (docs: "Failures
        and recovery"); the configured start when nothing is known of the old consumer."""
        floor = (self._info.get("ack_floor") or {}).get("stream_seq")
        born = _instant(self._info.get("created"))
        if not isinstance(floor, int) or floor < 0 or born is None:
            return self._config
        stream = await self._api.request(f"STREAM.INFO.{self._stream}")
        made = _instant(stream.get("created"))
        if made is None or made > born:
            return self._starting("all", "the start of the stream made again")
        where = f"stream sequence {floor + 1}, after the group's ack floor"
        return self._starting("by_start_sequence", where, opt_start_seq=floor + 1)

    def _starting(self, policy: str, where: str, **start: int) -> dict[str, Any]:
        log.warning(
            "JetStream consumer %s/%s is gone (deleted by an operator or with its stream, "
            "or after consumer_inactive_threshold); creating it again from %s",
            self._stream,
            self._consumer,
            where,
        )
        kept = {k: v for k, v in self._config.items() if not k.startswith("opt_start")}
        return {**kept, "deliver_policy": policy, **start}

    async def _pull(self) -> None:
        if not self._nc.is_connected or self._late is not None:
            return
        if time.monotonic() < self._paused_until:
            return  # the consumer refused the last pull
        # Lost deliveries that are due are asked for even with prefetch full (the server
        # sends due redeliveries before any new record).
        room = max(self._limit - self._held(), self._gaps.probing(time.monotonic())) - self._asked
        if room <= 0 and not self._asked:
            self._answered()  # no pull: no answer expected
        if room <= 0 or (self._asked and room < self._batch // 2):
            return
        batch = min(room, self._batch)
        request: dict[str, object] = {"batch": batch}
        probe = self._probing()
        if probe:
            request["no_wait"] = True  # answered at once (docs: "Failures and recovery")
        else:
            request["expires"] = int(self._options.pull_expires * _NS)
            request["idle_heartbeat"] = int(self._options.heartbeat * _NS)
        if self._options.failover:
            request["group"] = PRIORITY_GROUP
            if self._pin:
                request["id"] = self._pin
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), self._inbox)
        now = time.monotonic()
        if not self._asked and not probe:  # a probe keeps the silence counting
            self._last_seen = now
        self._asked += batch
        self._pull_until = now + (
            _PROBE if probe else self._options.pull_expires + self._options.heartbeat
        )

    def _probing(self) -> bool:
        """Pulls get no answer, or the consumer is being checked: the next ones are probes,
        each awaited :data:`_PROBE`."""
        return (
            self._silent_since is not None or self._no_responders > 0 or self._checking is not None
        )

    def _watch(self) -> None:
        """Count pulls as gone when they expired or their heartbeats stopped."""
        if not self._asked:
            return
        now = time.monotonic()
        if now - self._last_seen > self._options.heartbeat * 2 + 0.5:
            self._pull_gone()
            # Said until a pull gets an answer (checking the consumer is not enough).
            if self._silent_since is None:
                self._silent_since = self._last_seen
            self._last_seen = now  # the next check as long after this one (probes go on)
        elif now > self._pull_until:
            self._asked = 0

    async def _keep_alive(self) -> None:
        """``+WPI`` for every record held longer than a third of ``ack_wait``."""
        if not self._nc.is_connected:
            return
        now = time.monotonic()
        stale = now - self._options.ack_wait / 3
        parked = self._gaps.parked()
        for delivery in (*self._buffer, *self._unsettled.values(), *self._gate.held(), *parked):
            if delivery._touched < stale:
                delivery._touched = now
                await self._nc.publish(delivery.native.reply, _WPI)

    def _check_lag(self) -> None:
        """Start a lag check when one is due, as a task of its own, which the pulls after a
        reconnect do not wait for (docs: "Failures and recovery")."""
        now = time.monotonic()
        if now - self._lag_at < _LAG_REFRESH or not self._nc.is_connected:
            return
        if self._lag_task is not None and not self._lag_task.done():
            return
        self._lag_at = now
        self._lag_task = asyncio.create_task(
            self._refresh_lag(), name=f"hexa-event nats lag {self._stream}/{self._consumer}"
        )

    async def _refresh_lag(self) -> None:
        try:
            self._info = await self._api.consumer_info(self._stream, self._consumer)
        except Exception as exc:  # said in health; the pull loop goes on
            if isinstance(exc, JetStreamApiError) and exc.err_code in _GONE:
                self._check_consumer = True  # gone (also when no pull would tell): again
                self._wake.set()
            self._error = retrying(f"JetStream consumer {self._consumer}", exc)
            return
        if self._error and not self._check_consumer:
            self._error = ""
