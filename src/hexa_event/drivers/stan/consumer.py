"""Receiving: one STAN subscription per channel (a durable queue group named after the
action by default), all feeding one contract subscription. Acks are manual and batched; a
nack is an Ack not sent (the server redelivers after AckWait), its delay kept here; copies
held, nacked early or acked lately are not handed out (docs/engines/stan.md, Internals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription as NatsSubscription

from ...driver import (
    Delivery,
    Outcome,
    RawRecord,
    Subscription,
    SubscriptionSpec,
    SubscriptionStatus,
)
from ...errors import ConfigurationError, DriverError
from ..kit import goenvelope
from ..kit.buffer import DeliveryBuffer
from . import direct, monitor
from .acked import RecentAcks
from .errors import StanRequestError, is_session_gone, refused
from .options import StanSubscriptionOptions, check_channel
from .protocol import (
    MsgProto,
    ProtocolError,
    StartPosition,
    SubscriptionRequest,
    SubscriptionResponse,
    decode_msg_proto,
    encode_ack,
    encode_ack_head,
)
from .session import StanSession
from .writes import Writes, pub_head

logger = logging.getLogger(__name__)

_NACK_MEMORY = 3600.0
"""Seconds after its due time that a nack's delay is forgotten if never redelivered here."""


class StanDelivery(Delivery):
    """One STAN message handed to the core; ``native`` is the decoded MsgProto. The
    coordinates (``<channel>-<sequence>``), delivery count and time are read from it when
    asked."""

    __slots__ = ("_member", "native")

    def __init__(self, member: ChannelMember, msg: MsgProto) -> None:
        # Hot path: the base class's slots set directly rather than through super().
        data = msg.data
        opened = goenvelope.decode(data)  # what decode_body does, one call fewer
        if opened is None:
            self.record = RawRecord(msg.subject, "", {}, data)
        else:
            self.record = RawRecord(msg.subject, *opened)
        self.outcome = None
        self.delay = 0.0
        self._member = member
        self.native: MsgProto = msg

    # Read-only here: only the driver sets a delivery's coordinates, count and time.
    @property
    def coordinates(self) -> str:  # type: ignore[override]
        return f"{self.native.subject}-{self.native.sequence}"

    @property
    def delivery_count(self) -> int:  # type: ignore[override]
        """1 on the first delivery; STAN's redelivery count + 1 (at least 2) after."""
        msg = self.native
        return max(msg.redelivery_count + 1, 2) if msg.redelivered else 1

    @property
    def timestamp(self) -> float | None:  # type: ignore[override]
        """The server's time of the message (seconds since the epoch)."""
        return self.native.timestamp / 1e9 if self.native.timestamp else None

    @property
    def sequence(self) -> int:
        return self.native.sequence

    @property
    def redelivered(self) -> bool:
        return self.native.redelivered


class ChannelMember:
    """This process's STAN subscription on one channel."""

    def __init__(self, owner: StanSubscription, channel: str, request: SubscriptionRequest) -> None:
        self.owner = owner
        self.channel = channel
        self.request = request
        self.ack_inbox = ""
        self.ack_command = b""
        """The start of the PUB command of an Ack (:mod:`.writes`)."""
        self.ack_head = encode_ack_head(channel)
        self.nats_sub: NatsSubscription | None = None
        self.held: set[int] = set()
        """Sequences received and not yet settled (buffered or handed out)."""
        self.nacked: dict[int, float] = {}
        """Sequence -> monotonic time before which a redelivery here is dropped."""
        self.acked = RecentAcks(2.0 * request.ack_wait_in_secs)
        self.dropped = 0
        """Copies not handed out because held or acked here (redeliveries, crossings)."""
        self.last_sequence = 0
        """The highest sequence received here (where a re-made non-durable one continues)."""
        self._acking: set[asyncio.Task[None]] = set()
        """Acks again under way (:meth:`_ack_again`)."""

    async def open(self) -> None:
        session = self.owner.session
        nc = session.client()
        self.acked.clear()  # a server joined again may number its messages anew
        if self.nats_sub is None:
            # Deliveries may start right after the response: listen first.
            self.nats_sub = await direct.subscribe(nc, self.request.inbox, self._on_message)
        request = self.request
        if self.last_sequence and not request.durable_name:
            # Re-made after the session was lost: a non-durable subscription was deleted
            # with it, so continue after what this member has seen (unsettled included).
            start = min(self.held) if self.held else self.last_sequence + 1
            request = msgspec.structs.replace(
                request, start_position=StartPosition.SEQUENCE_START, start_sequence=start
            )
        response = await session.request(
            session.response.sub_requests, request, SubscriptionResponse
        )
        if response.error:
            if is_session_gone(response.error):
                session.lost(response.error)
                raise DriverError(f"subscribe to {self.channel!r}: {response.error}")
            what = f"the subscription to {self.channel!r} ({_describe(self.request)})"
            raise refused(self.channel, response.error, what)
        self.ack_inbox = response.ack_inbox
        self.ack_command = pub_head(response.ack_inbox)

    def _on_message(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        """A MsgProto from the delivery inbox (:mod:`.direct`; the server sends no headers)."""
        buffer = self.owner.buffer
        if buffer.closed:
            return
        try:
            proto = decode_msg_proto(data)
        except ProtocolError:
            logger.warning("STAN: undecodable message on %s ignored", self.channel)
            return
        sequence = proto.sequence
        if sequence in self.held:
            # Still being handled here: the server redelivered it after AckWait.
            self.dropped += 1
            return
        if proto.redelivered and self.acked and self.acked.covers(sequence, time.monotonic()):
            # Acked here lately: sent before our Ack reached the server (or that Ack was
            # lost). Ack it again; the first settlement stands.
            self.dropped += 1
            self._ack_again(sequence)
            return
        if self.nacked and sequence in self.nacked:
            if time.monotonic() < self.nacked[sequence]:
                return  # nacked with a delay not yet over: let AckWait tick again
            del self.nacked[sequence]
        self.held.add(sequence)
        if sequence > self.last_sequence:
            self.last_sequence = sequence
        items = buffer.items
        items.append(StanDelivery(self, proto))
        if len(items) == 1:  # a fetch waits only while the buffer is empty: one wake-up
            buffer.wake()  # per burst, not one per message

    def _ack_again(self, sequence: int) -> None:
        nc = self.owner.session.nc
        if nc is None or not self.ack_inbox:
            return  # the server sends it again after AckWait; still remembered then
        task = asyncio.get_running_loop().create_task(self._send_ack(nc, sequence))
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)

    async def _send_ack(self, nc: NatsClient, sequence: int) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await nc.publish(self.ack_inbox, encode_ack(self.ack_head, sequence))

    async def close(self, *, unsubscribe: bool) -> None:
        session = self.owner.session
        if self.nats_sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.nats_sub.unsubscribe()
            self.nats_sub = None
        if not self.ack_inbox or not session.ready:
            return
        response = await session.close_subscription(
            self.channel, self.ack_inbox, unsubscribe=unsubscribe
        )
        if response.error:
            raise StanRequestError(
                f"closing the subscription to {self.channel!r} failed: {response.error}",
                retriable=False,
            )


class StanSubscription(Subscription):
    """The contract's subscription: every channel of the spec, one member each."""

    def __init__(self, session: StanSession, spec: SubscriptionSpec) -> None:
        if spec.pattern is not None:
            raise ConfigurationError(
                "NATS Streaming has no wildcard channels: subscribe to channel names, not a pattern"
            )
        if not spec.channels:
            raise ConfigurationError("a STAN subscription needs at least one channel")
        self.session = session
        self._spec = spec
        self.options: StanSubscriptionOptions = spec.options or StanSubscriptionOptions()
        self.buffer: DeliveryBuffer[StanDelivery, StanDelivery] = DeliveryBuffer()
        self._error = ""
        nc = session.client()
        self.members = [
            ChannelMember(self, check_channel(channel), self._request(channel, nc.new_inbox()))
            for channel in dict.fromkeys(spec.channels)
        ]

    def _request(self, channel: str, inbox: str) -> SubscriptionRequest:
        o, spec, defaults = self.options, self._spec, self.session.options
        kind = o.kind
        queue = (o.queue_group or spec.group) if kind in ("queue", "durable_queue") else ""
        durable = (o.durable_name or spec.group) if kind in ("durable", "durable_queue") else ""
        if kind == "durable_queue" and ":" in durable:
            raise ConfigurationError(
                f"the durable name of a STAN durable queue group may not contain ':' "
                f"({durable!r}); set StanSubscriptionOptions(durable_name=...)"
            )
        position = StartPosition.FIRST if spec.start == "earliest" else StartPosition.NEW_ONLY
        sequence = delta = 0
        if o.start is not None:
            position = StartPosition[o.start.upper()]
        elif o.start_sequence is not None:
            position, sequence = StartPosition.SEQUENCE_START, o.start_sequence
        elif o.start_time_delta is not None:
            position, delta = StartPosition.TIME_DELTA_START, int(o.start_time_delta * 1e9)
        return SubscriptionRequest(
            client_id=self.session.client_id,
            subject=channel,
            q_group=queue,
            inbox=inbox,
            max_in_flight=o.max_inflight or defaults.max_inflight or max(1, spec.prefetch),
            ack_wait_in_secs=o.ack_wait or defaults.ack_wait,
            durable_name=durable,
            start_position=position,
            start_sequence=sequence,
            start_time_delta=delta,
        )

    async def open(self) -> None:
        """Join every channel; on failure leave the ones already joined."""
        try:
            await self.resubscribe()
        except BaseException:
            await self._leave(unsubscribe=False, strict=False)  # the ones not joined: no-ops
            raise
        self.session.members.add(self)

    async def resubscribe(self) -> None:
        """Join every channel (again, after a recovery) all at once: each join is a round
        trip, and a receiver's spec lists its retry channels too. Once every join has ended,
        raises the first failure in the channels' order (the caller leaves the ones joined)."""
        joins = await asyncio.gather(*(m.open() for m in self.members), return_exceptions=True)
        for outcome in joins:
            if isinstance(outcome, BaseException):
                raise outcome

    @property
    def closed(self) -> bool:
        return self.buffer.closed

    async def fetch(self, max_count: int) -> Sequence[StanDelivery]:
        return await self.buffer.fetch(max_count)

    async def settle(self, deliveries: Sequence[Delivery]) -> None:
        """Write the Acks of the acked deliveries in one write; a nack is an Ack not sent
        (its delay kept). Each member's held and recently acked sequences are updated once
        per settle, all before the write is awaited: a copy the server sent before an Ack
        reached it is acked again, never handed out."""
        nc = self.session.nc
        parts = Writes(nc) if nc is not None else None
        now = time.monotonic()
        ack, nack = Outcome.ACK, Outcome.NACK
        settled: dict[ChannelMember, tuple[list[int], list[int]]] = {}
        for delivery in deliveries:
            if not isinstance(delivery, StanDelivery):
                raise TypeError(f"not a STAN delivery: {delivery!r}")
            member = delivery._member
            sequence = delivery.native.sequence
            lists = settled.get(member)
            if lists is None:
                lists = settled[member] = ([], [])
            outcome = delivery.outcome
            if outcome is ack:
                if parts is None or not member.ack_inbox:
                    raise self._closed_error()
                parts.add(member.ack_command, encode_ack(member.ack_head, sequence))
                lists[0].append(sequence)
            else:
                if outcome is nack and delivery.delay > 0:
                    member.nacked[sequence] = now + delivery.delay
                lists[1].append(sequence)
        for member, (acked, given_back) in settled.items():
            # Remembered before they leave ``held`` (nothing runs in between).
            member.acked.add_all(acked, now)
            member.held.difference_update(acked, given_back)
        if parts is not None:
            try:
                await parts.flush()  # every Ack in one write
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._error = f"acks not sent: {type(exc).__name__}: {exc}"
                raise DriverError(
                    f"STAN acks could not be sent ({type(exc).__name__}); they are sent again"
                ) from exc
        self._error = ""
        for member in self.members:
            member.acked.prune(now)
            if len(member.nacked) > 1000:
                member.nacked = {s: t for s, t in member.nacked.items() if t + _NACK_MEMORY >= now}

    def _closed_error(self) -> DriverError:
        """Acks cannot be sent: retriable while the session may come back, not once it
        failed for good or the driver was closed (retrying could never write them)."""
        failure = self.session.failure
        if failure is None:
            return DriverError("the STAN connection is closed; acks not sent")
        return DriverError(
            f"the STAN connection is closed for good; acks not sent: {failure}", retriable=False
        )

    async def close(self) -> None:
        """Close every channel's subscription (durables and durable groups are kept, but for
        an ephemeral spec's, which are deleted); what fails is logged. Idempotent."""
        if not self.closed:  # closed now; left to the end, also when the caller is cancelled
            self.buffer.close()
            await asyncio.shield(self._leave(unsubscribe=self._spec.ephemeral, strict=False))

    async def unsubscribe(self) -> None:
        """Leave for good: a durable (or the last member's durable queue group) is deleted."""
        await self._leave(unsubscribe=True, strict=True)

    async def _leave(self, *, unsubscribe: bool, strict: bool) -> None:
        self.buffer.close()
        self.session.members.discard(self)
        errors = []
        for member in self.members:
            try:
                await member.close(unsubscribe=unsubscribe)
            except DriverError as exc:
                errors.append(str(exc))
        if errors:
            logger.warning("STAN: leaving %s: %s", self._spec.group, "; ".join(errors))
            if strict:
                raise DriverError("; ".join(errors))

    async def lag(self) -> Mapping[str, int] | None:
        """Per channel, the group's messages not sent or not acked yet, from the server's
        monitoring endpoint (``StanOptions.monitor_url``; None without)."""
        url = self.session.options.monitor_url
        if url is None:
            return None
        members = [(m.channel, m.request) for m in self.members]
        return await asyncio.to_thread(monitor.lag, url, self.session.client_id, members)

    def status(self) -> SubscriptionStatus:
        assignment = tuple(f"{m.channel}:{_describe(m.request)}" for m in self.members)
        return SubscriptionStatus(assignment=assignment, error=self.session.error or self._error)


def _describe(request: SubscriptionRequest) -> str:
    queue, durable = request.q_group, request.durable_name
    if queue:
        return f"durable queue {durable}:{queue}" if durable else f"queue {queue}"
    return f"durable {durable}" if durable else "plain"
