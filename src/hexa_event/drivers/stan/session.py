"""One STAN client session on a nats-py connection: connect, publish with PubAcks, protocol
requests, heartbeats and pings, and re-establishing a lost session under the same client id
(see docs/engines/stan.md#the-session). Every wait is bounded; a publish cut off by a drop
fails with the retriable :class:`SessionInterruptedError` and is sent again by the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import Any, Protocol, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.nuid import NUID

from ...errors import ClosedError, DriverError, NotStoredError
from ...redaction import redact_urls
from ..kit.buffer import DeliveryBuffer
from . import direct
from .errors import (
    StanClientIdInUseError,
    StanClusterNotFoundError,
    StanRequestError,
    is_session_gone,
)
from .options import StanOptions
from .protocol import (
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    Message,
    Ping,
    PingResponse,
    ProtocolError,
    PubAck,
    SubscriptionResponse,
    UnsubscribeRequest,
    encode_pub_channel,
    encode_pub_head,
    encode_pub_msg,
)
from .writes import Writes, pub_head

logger = logging.getLogger(__name__)

MAX_CONTROL_LINE = 4096
"""nats-server's default ``max_control_line``: the longest protocol line it reads."""

M = TypeVar("M", bound=Message)


class SessionInterruptedError(DriverError):
    """The connection or session went away while a publish waited for its PubAck."""


class StanNotAnsweringError(SessionInterruptedError):
    """Nothing served the publish subject (the streaming server is starting or gone)."""


class Member(Protocol):
    """A subscription: re-subscribes after a recovery; its buffer fails with
    :attr:`StanSession.failure`."""

    buffer: DeliveryBuffer[Any, Any]

    async def resubscribe(self) -> None: ...


class StanSession:
    """A STAN session on ``nc`` (the caller's, left open on close) or a connection of its own."""

    def __init__(self, options: StanOptions, nc: NatsClient | None = None) -> None:
        self.options = options
        self.client_id = options.client_id
        self.nc: NatsClient | None = nc
        self._owns_nc = nc is None
        self._nuid = NUID()
        self._acks: dict[bytes, tuple[PublishBatch, int]] = {}
        """Guid -> the batch and index of each publish waiting for its PubAck."""
        self._room = asyncio.Event()
        self._guid_prefix = bytes(self._nuid.next()) + b"-"
        self._guid_count = 0
        self._start_lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        """:meth:`_run`, from a successful :meth:`start` on."""
        self._wake = asyncio.Event()
        self._nats_up = True
        self._session_ok = False
        self._reconnects_seen = 0
        self._outstanding = 0
        self._internal: dict[str, NatsSubscription] = {}
        """Our NATS subscriptions: PubAcks, ping responses, heartbeats."""
        self.members: set[Member] = set()
        """The open subscriptions, told of a recovery or a failure."""
        self.response = ConnectResponse()
        self.conn_id = b""
        self.ack_subject = ""
        self.ping_inbox = ""
        self.error = ""
        """The current problem, empty while the session is healthy (for status())."""
        self.epoch = 0
        """Bumped whenever the connection or the session was interrupted."""
        self.failure: DriverError | ClosedError | None = None
        """Set by :meth:`close` (a ClosedError) or when the NATS connection was closed for
        good: nothing more goes through."""

    @property
    def closed(self) -> bool:
        return isinstance(self.failure, ClosedError)

    async def start(self) -> None:
        """Connect (once); raises the driver's connect errors on the first attempt."""
        if self._loop is not None:
            return
        async with self._start_lock:
            if self._loop is not None:
                return
            if self.closed:
                raise ClosedError("this STAN driver was closed; connect() again")
            try:
                await self._open()
            except BaseException:
                await self._release_nats()  # the caller gets the error, not a closed_cb log
                raise
            self._session_ok = True
            self._update_ready()
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def _open(self) -> None:
        options = self.options
        if self.nc is None:
            try:
                self.nc = await nats.connect(
                    **options.connect_kwargs(),
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                    error_cb=self._on_error,
                )
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                raise DriverError(
                    f"cannot reach the NATS Streaming server at {redact_urls(options.servers)}: "
                    f"{type(exc).__name__}: {exc}; check the URL and that the server runs",
                    retriable=False,
                ) from exc
            # Connected: reconnect forever, as stan.go does (a session outlives drops).
            self.nc.options["max_reconnect_attempts"] = -1
        nc = self.nc
        self._reconnects_seen = int(nc.stats.get("reconnects", 0))
        self.ack_subject = f"_STAN.acks.{self._nuid.next().decode()}"
        self.ping_inbox = nc.new_inbox()
        # One reply subject for every publish: the server matches and caches it once.
        self._internal["acks"] = await direct.subscribe(nc, self.ack_subject, self._on_pub_ack)
        self._internal["pings"] = await nc.subscribe(self.ping_inbox, cb=self._on_ping_response)
        await self._handshake()

    async def _handshake(self) -> None:
        """ConnectRequest with a fresh heartbeat inbox and connection id."""
        nc = self.client()
        options = self.options
        if old := self._internal.pop("heartbeats", None):
            # Not answering on the old inbox lets the server replace a stale registration.
            with contextlib.suppress(nats.errors.Error):
                await old.unsubscribe()
        hb_inbox = nc.new_inbox()
        self._internal["heartbeats"] = await nc.subscribe(hb_inbox, cb=self._on_heartbeat)
        conn_id = bytes(self._nuid.next())
        request = ConnectRequest(
            client_id=options.client_id,
            heartbeat_inbox=hb_inbox,
            conn_id=conn_id,
            ping_interval=options.ping_interval,
            ping_max_out=options.ping_max_out,
        )
        subject = f"{options.discover_prefix}.{options.cluster_id}"
        unanswered = StanClusterNotFoundError(
            options.cluster_id, redact_urls(options.servers), options.connect_timeout
        )
        response = await self.request(subject, request, ConnectResponse, unanswered)
        if response.error:
            if "already registered" in response.error:
                raise StanClientIdInUseError(options.client_id, options.cluster_id)
            raise StanRequestError(
                f"the NATS Streaming server refused the connection: {response.error}",
                retriable=False,
            )
        if not response.pub_prefix or not response.sub_requests:
            raise ProtocolError("ConnectResponse without publish or subscribe subjects")
        self.response = response
        self.conn_id = conn_id
        self._outstanding = 0

    async def close(self) -> None:
        """Send CloseRequest (durables survive it), drop our inboxes, close our connection."""
        if self.closed:
            return
        self.failure = failure = ClosedError("the STAN driver was closed; connect() again")
        self._ready.set()  # wake waiters; they see the failure
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
        self._fail_pending(failure)
        nc = self.nc
        if nc is not None and nc.is_connected and self._session_ok:
            try:
                response = await self._close_request()
                if response.error:
                    logger.warning("STAN close request refused: %s", response.error)
            except DriverError as exc:
                logger.warning("STAN close request failed: %s", exc)
        await self._release_nats()

    async def _release_nats(self) -> None:
        subs = list(self._internal.values())
        self._internal.clear()
        if not self._owns_nc:
            for sub in subs:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        elif (nc := self.nc) is not None:
            self.nc = None  # first: closed_cb then sees a connection we closed
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()

    def client(self) -> NatsClient:
        """The NATS connection; ClosedError once closed."""
        if self.nc is None:
            raise ClosedError("the STAN session has no NATS connection (closed)")
        return self.nc

    def _update_ready(self) -> None:
        if self.failure is not None or (self._nats_up and self._session_ok):
            self._ready.set()
        else:
            self._ready.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.failure is None

    async def wait_ready(self, within: float) -> None:
        """Return once the session can publish; DriverError after ``within`` seconds."""
        await self.start()
        if self.failure is None and not self._ready.is_set():
            try:
                async with asyncio.timeout(max(0.0, within)):
                    await self._ready.wait()
            except TimeoutError:
                raise DriverError(
                    f"the STAN session is not usable after {within:g}s: {self.error or 'down'}"
                ) from None
        if self.failure is not None:
            raise self.failure

    async def _on_disconnected(self) -> None:
        if self.failure is not None:
            return
        self._nats_up = False
        self.error = "NATS connection lost; reconnecting"
        self._interrupted("the NATS connection was lost")

    async def _on_reconnected(self) -> None:
        self._wake.set()  # the loop handles it at once

    async def _on_closed(self) -> None:
        if self.failure is not None or self.nc is None:  # told already, or closed by us
            return
        cause = str(self.nc.last_error or "no reason given")
        self.error = (
            f"the NATS connection of STAN session {self.client_id} was closed for good "
            f"({cause}); the receivers on it stopped and emits fail: connect() again"
        )
        logger.error("%s", self.error)
        self.failure = failure = DriverError(self.error, retriable=False)
        self._fail_pending(failure)
        self._ready.set()  # waiters wake and see the failure
        for member in list(self.members):
            member.buffer.fail(failure)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            logger.warning(
                "STAN %s: messages dropped locally (slow consumer); the server redelivers "
                "them after AckWait",
                self.client_id,
            )
        else:
            logger.debug("STAN %s: NATS error %s: %s", self.client_id, type(exc).__name__, exc)

    def _interrupted(self, why: str) -> None:
        self.epoch += 1
        self._fail_pending(SessionInterruptedError(f"publish interrupted: {why}"))
        self._update_ready()

    def _fail_pending(self, exc: BaseException) -> None:
        pending, self._acks = self._acks, {}
        for batch, index in pending.values():
            batch.resolve(index, exc)
        self._room.set()

    def lost(self, why: str) -> None:
        """The server no longer knows this session: :meth:`_run` re-establishes it."""
        if self.failure is not None or not self._session_ok:
            return
        logger.warning("STAN %s: session lost (%s); re-establishing", self.client_id, why)
        self._session_ok = False
        self.error = f"STAN session lost: {why}"
        self._interrupted(why)
        self._wake.set()

    async def _on_heartbeat(self, msg: Msg) -> None:
        if msg.reply and self.failure is None:
            with contextlib.suppress(nats.errors.Error):
                await self.client().publish(msg.reply, b"")

    async def _on_ping_response(self, msg: Msg) -> None:
        if msg.headers and not msg.data:
            return  # no responders (status 503): not an answer from the server
        try:
            response = PingResponse.decode(msg.data)
        except ProtocolError:
            return
        if response.error:
            self.lost(response.error)
        else:
            self._outstanding = 0

    async def _run(self) -> None:
        """The session's one loop, woken every ping interval, by :meth:`lost` and by a
        reconnect: notices a re-established connection, re-establishes a lost session
        (backing off from 0.1 to 2 seconds) and pings the server."""
        backoff = 0.1
        while self.failure is None:
            response, options = self.response, self.options
            interval = response.ping_interval or options.ping_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval if self._session_ok else backoff):
                    await self._wake.wait()
            self._wake.clear()
            nc = self.nc
            if nc is None or self.failure is not None:
                return
            reconnects = int(nc.stats.get("reconnects", 0))
            if reconnects != self._reconnects_seen:  # reconnected (ours or a caller's connection)
                self._reconnects_seen = reconnects
                logger.info("STAN %s: NATS connection re-established", self.client_id)
                self._nats_up = True
                if self._session_ok:
                    self.error = ""
                # Acks of publishes sent before the drop may never come: re-send them.
                self._interrupted("the NATS connection was re-established")
            if not self._session_ok:
                backoff = 0.1 if await self._reestablish() else min(backoff * 2, 2.0)
                continue
            if not nc.is_connected:
                continue
            self._outstanding += 1
            max_out = response.ping_max_out or options.ping_max_out
            if self._outstanding > max_out:
                self.lost(f"{max_out} pings in a row went unanswered")
                continue
            ping = Ping(conn_id=self.conn_id).encode()
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(response.ping_requests, ping, reply=self.ping_inbox)

    async def _reestablish(self) -> bool:
        """One attempt at a new session under our client id, every member re-subscribed."""
        try:
            with contextlib.suppress(DriverError):
                await self._close_request()
            await self._handshake()
            self._session_ok = True
            for member in list(self.members):
                await member.resubscribe()
        except (DriverError, nats.errors.Error, OSError) as exc:
            self._session_ok = False
            self.error = f"re-establishing the STAN session: {exc}"
            logger.info("STAN %s: %s", self.client_id, self.error)
            return False
        self.error = "" if self._nats_up else self.error
        self._update_ready()
        logger.info("STAN %s: session re-established", self.client_id)
        return True

    async def request(
        self,
        subject: str,
        message: Message,
        response_type: type[M],
        unanswered: DriverError | None = None,
    ) -> M:
        """A protocol request with the connect timeout; the decoded response. ``unanswered``
        is raised when no server answers (a DriverError naming the request by default)."""
        name = type(message).__name__
        try:
            reply = await self.client().request(
                subject, message.encode(), timeout=self.options.connect_timeout
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError) as exc:
            raise unanswered or DriverError(
                f"the NATS Streaming server did not answer {name} within "
                f"{self.options.connect_timeout:g}s"
            ) from exc
        except nats.errors.Error as exc:
            raise DriverError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        return response_type.decode(reply.data)

    async def _close_request(self) -> CloseResponse:
        request = CloseRequest(client_id=self.client_id)
        return await self.request(self.response.close_requests, request, CloseResponse)

    async def close_subscription(
        self, channel: str, ack_inbox: str, *, unsubscribe: bool
    ) -> SubscriptionResponse:
        """Close (durables kept) or unsubscribe (durables deleted) one subscription."""
        subject = self.response.unsub_requests if unsubscribe else self.response.sub_close_requests
        request = UnsubscribeRequest(client_id=self.client_id, subject=channel, inbox=ack_inbox)
        return await self.request(subject, request, SubscriptionResponse)

    async def publish(self, items: list[tuple[str, bytes]]) -> PublishBatch:
        """Send ``(channel, body)`` PubMsgs, at most ``max_pub_acks_inflight`` unanswered;
        the batch collects their PubAcks (or :class:`SessionInterruptedError`)."""
        batch = PublishBatch(len(items))
        writes = Writes(self.client())
        limit = self.options.max_pub_acks_inflight
        head = encode_pub_head(self.client_id, self.conn_id)
        pub_prefix = self.response.pub_prefix + "."
        guid_prefix = self._guid_prefix
        channel = ""
        command = field = b""
        done = 0
        try:
            while done < len(items):
                acks = self._acks  # replaced when pending publishes were failed
                room = limit - len(acks)
                if room <= 0:
                    self._room.clear()
                    await self._room.wait()
                    if self.failure is not None:  # closed meanwhile: no PubAck would come
                        raise self.failure
                    continue
                number = self._guid_count
                for index, (item_channel, data) in enumerate(items[done : done + room], done):
                    if item_channel != channel:  # a batch is mostly one channel: once per run
                        channel = item_channel
                        command = pub_head(pub_prefix + channel, self.ack_subject)
                        field = encode_pub_channel(channel)
                    number += 1
                    guid = guid_prefix + b"%d" % number
                    acks[guid] = (batch, index)
                    writes.add(command, encode_pub_msg(head, guid, field, data))
                self._guid_count = number
                done += room
                try:
                    await writes.flush()
                except (nats.errors.Error, OSError) as exc:
                    # Not written, or written into a broken connection: sent again, the unsent too.
                    interrupted = SessionInterruptedError(f"publish failed: {type(exc).__name__}")
                    self.forget(batch, interrupted)
                    for index in range(done, len(items)):
                        batch.resolve(index, interrupted)
                    break
        except BaseException:  # cancelled: its places of the window are free at once
            self.forget(batch)
            raise
        return batch

    def body_limit(self, channel: str) -> int:
        """The largest record body the server takes on ``channel`` (``max_payload`` less what
        a PubMsg adds); NotStoredError when ``channel`` makes a protocol line over
        ``max_control_line``: the server would close the connection over either."""
        line = len(self.response.pub_prefix) + len(channel.encode()) + len(self.ack_subject) + 80
        if line > MAX_CONTROL_LINE:
            raise NotStoredError(
                f"channel {channel[:60]!r}... ({len(channel)} characters) makes a NATS "
                f"protocol line of {line} bytes, over the streaming server's "
                f"max_control_line ({MAX_CONTROL_LINE} bytes by default); use a shorter "
                "channel name",
                limit="max_control_line",
            )
        max_payload = self.client().max_payload
        overhead = len(channel.encode()) + len(self.client_id) + 96  # client id, guid, framing
        return max_payload - overhead if max_payload else sys.maxsize

    def forget(self, batch: PublishBatch, why: BaseException | None = None) -> None:
        """Stop waiting for the batch's unanswered publishes (timed out), failed with ``why``."""
        if batch.remaining:  # in place: a publish under way holds this dict
            for guid in [guid for guid, entry in self._acks.items() if entry[0] is batch]:
                index = self._acks.pop(guid)[1]
                if why is not None:
                    batch.resolve(index, why)
        self._room.set()  # also after a failed write, which freed its places silently

    def _on_pub_ack(self, data: bytes, headers: dict[str, str] | None = None) -> None:
        error = ""
        # The common PubAck is the guid alone: field 1, one length byte.
        if data and data[0] == 0x0A and len(data) == data[1] + 2:
            guid = data[2:]
        elif not data:
            if headers:  # no responders: nothing serves the publish subjects right now
                self._fail_pending(StanNotAnsweringError("no streaming server answered"))
            return
        else:
            try:
                ack = PubAck.decode(data)
            except ProtocolError:
                logger.warning("STAN %s: undecodable PubAck ignored", self.client_id)
                return
            guid, error = ack.guid.encode(), ack.error
        entry = self._acks.pop(guid, None)
        if entry is not None:
            entry[0].resolve(entry[1], error)
            self._room.set()
        if error and is_session_gone(error):
            self.lost(error)


class PublishBatch:
    """One attempt at sending some records: ``results[i]`` is None while the i-th waits, ``""``
    once stored, the server's error text, or the exception that interrupted it; ``done`` is
    set when all are in."""

    __slots__ = ("done", "remaining", "results")

    def __init__(self, size: int) -> None:
        self.results: list[str | BaseException | None] = [None] * size
        self.remaining = size
        self.done = asyncio.Event()

    def resolve(self, index: int, outcome: str | BaseException) -> None:
        if self.results[index] is None:
            self.results[index] = outcome
            self.remaining -= 1
            if not self.remaining:
                self.done.set()
