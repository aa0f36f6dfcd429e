"""NATS Streaming: hexa-event's ``stan://`` driver against a raw nats-py STAN loop.

The reference speaks the same STAN protocol with our protocol module on a bare nats-py
connection, without any of the driver's machinery: no session recovery, no re-sends, no
bookkeeping of held or nacked messages.

- emit: raw = PubMsg frames published in a loop, then wait for every PubAck, each body the
  event's payload encoded and wrapped with its key and a sealed event's headers in our
  envelope (``raw_bodies``: the same bytes as ours, so the server's work is the same; until
  2026-12-07 the raw loop sent one body built before the clock, so ours paid the payload
  object, its encoding and the envelope per event and theirs did not); ours =
  ``Emitter.emit_many`` in batches of 1,000, four in flight (payload encoding, context
  headers, event ids and the envelope included). Keys are made before the clock on both
  sides.
- emit, driver alone: the same sealed records through ``Driver.publish`` in batches.
- consume + ack, driver alone: ``fetch``, ``ack`` and ``settle`` on the driver's subscription.
- consume + ack: raw = a durable queue subscription whose callback decodes each MsgProto,
  its envelope and the JSON payload (as the Kafka and Pulsar references decode theirs) and
  publishes the Ack; ours = a receiver whose handler takes the decoded JSON payload, acks
  settled in batches. Both sides are connected before timing and timed from their
  subscribing (ours joins its retry channels too, which exist, as after a service's first
  start) to the last event handled. Checked on 2026-12-07: the receiver's start took
  40-220 ms here against a few ms for the raw loop's one join, but timing both from being
  subscribed (as ``pulsar_bench.py`` does) is no fairer: the server sends up to a window
  of messages (1,280 for the receiver) while the other joins run, parsed before the
  clock starts, and a 5,000-event round read 1.61 of raw that way. The joins are what a
  receiver costs; they stay in.

The raw side is the fastest configuration measured on the 2-core bench machine (medians of
3 alternating rounds, 20,000 events): publishing with no window (every PubMsg out before
the first PubAck is awaited: 63k/s) beats windows of 16,384 (48k/s), 4,096 (44k/s), 1,024
(36k/s) and 256 (30k/s) unacknowledged publishes; ``RawStan.publish_all(window=...)`` runs
those. The subscription's ``max_in_flight`` made no difference beyond the noise (256: 47k/s,
1,024: 44k/s, 4,096: 35k/s, 16,384: 47k/s; ``consume_all(max_in_flight=...)``). Its
connection skips nats-py's subject checks (``skip_subject_validation``, two regular
expressions per publish), as the driver's does. Acks and PubMsgs go through nats-py's
public ``publish``, one call per message (nats-py writes them out in one socket write per
flush either way); the driver writes a batch's PUB commands as one (``drivers/stan/writes.py``),
which nats-py offers no public call for.

    HEXA_STAN_URL=nats://127.0.0.1:4223 HEXA_STAN_CLUSTER_ID=hexa-event \\
        python benchmarks/stan_bench.py [--count 20000]
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import nats
from _harness import Comparison, cli, compare_all, in_batches, sealed
from nats.nuid import NUID

import hexa_event as he
from hexa_event.drivers.stan.protocol import (
    CloseRequest,
    ConnectRequest,
    ConnectResponse,
    SubscriptionRequest,
    SubscriptionResponse,
    decode_body,
    decode_msg_proto,
    encode_ack,
    encode_ack_head,
    encode_body,
    encode_pub_channel,
    encode_pub_head,
    encode_pub_msg,
)

NATS_URL = os.environ.get("HEXA_STAN_URL", "nats://127.0.0.1:4223")
CLUSTER = os.environ.get("HEXA_STAN_CLUSTER_ID", "hexa-event")
STAN_URL = f"stan://{NATS_URL.split('://', 1)[1]}?cluster_id={CLUSTER}"
BATCH = 1000
decode_payload = msgspec.json.Decoder(dict[str, Any]).decode
IN_FLIGHT = 4
KEYS = 64
KEY_NAMES = [f"k{n}" for n in range(KEYS)]


def _payload(n: int) -> dict[str, Any]:
    return {"n": n, "name": "tick", "total": 4200, "currency": "EUR", "note": "small event"}


def _sample_body() -> bytes:
    record = he.envelope.Envelope().seal(he.Event("t", "k0", _payload(12345)), he.Context())
    return encode_body(record.key, record.headers, record.body)


def raw_bodies() -> Callable[[int], bytes]:
    """The raw loop's message ``n``: what a client sending what ours sends must do per
    event, encode its payload and wrap it with its key and headers (a sealed event's) in one
    envelope; the same bytes on the wire as ours, so the server's work is the same."""
    headers = he.envelope.Envelope().seal(he.Event("t", "k0", _payload(0)), he.Context()).headers
    encode = msgspec.json.encode
    return lambda n: encode_body(KEY_NAMES[n % KEYS], headers, encode(_payload(n)))


class RawStan:
    """The least a STAN client must do: connect, publish and wait for PubAcks, subscribe."""

    def __init__(self) -> None:
        self.nuid = NUID()
        self.client_id = f"bench-raw-{uuid.uuid4().hex[:8]}"
        self.first_at = 0.0

    async def open(self) -> None:
        # nats-py's check of every subject by two regular expressions is off, as in the
        # driver: the raw loop's subjects are its own.
        self.nc = await nats.connect(NATS_URL, skip_subject_validation=True)
        hb = self.nc.new_inbox()

        async def beat(msg: Any) -> None:
            await self.nc.publish(msg.reply, b"")

        await self.nc.subscribe(hb, cb=beat)
        self.conn_id = bytes(self.nuid.next())
        request = ConnectRequest(client_id=self.client_id, heartbeat_inbox=hb, conn_id=self.conn_id)
        reply = await self.nc.request(f"_STAN.discover.{CLUSTER}", request.encode(), timeout=5)
        self.response = ConnectResponse.decode(reply.data)
        assert not self.response.error, self.response.error

    async def publish_all(
        self,
        channel: str,
        body: bytes | Callable[[int], bytes],
        count: int,
        window: int | None = None,
    ) -> None:
        """Publish ``count`` PubMsgs (``body``, or ``body(n)`` for the n-th), at most
        ``window`` unacknowledged (None: no limit)."""
        acks = f"_STAN.acks.{self.nuid.next().decode()}"
        done = asyncio.get_running_loop().create_future()
        received = 0
        room = asyncio.Event()

        async def on_ack(msg: Any) -> None:
            nonlocal received
            received += 1
            if window is not None:
                room.set()
            if received == count and not done.done():
                done.set_result(None)

        sub = await self.nc.subscribe(acks, cb=on_ack)
        subject = f"{self.response.pub_prefix}.{channel}"
        head = encode_pub_head(self.client_id, self.conn_id)
        channel_field = encode_pub_channel(channel)
        for sent in range(count):
            while window is not None and sent - received >= window:  # None: no window
                room.clear()
                await room.wait()
            data = body(sent) if callable(body) else body
            frame = encode_pub_msg(head, bytes(self.nuid.next()), channel_field, data)
            await self.nc.publish(subject, frame, reply=acks)
        await asyncio.wait_for(done, 120)
        await sub.unsubscribe()

    async def consume_all(self, channel: str, count: int, max_in_flight: int = 1024) -> None:
        """Consume ``count`` messages; ``first_at`` (the loop's time) says when the first
        was handled."""
        inbox = self.nc.new_inbox()
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        received = 0
        ack_inbox = ""
        ack_head = encode_ack_head(channel)
        subscribed = asyncio.Event()  # messages may come before the response is read

        async def on_msg(msg: Any) -> None:
            nonlocal received
            if not ack_inbox:
                await subscribed.wait()
            proto = decode_msg_proto(msg.data)
            decode_payload(decode_body(proto.data)[2])
            await self.nc.publish(ack_inbox, encode_ack(ack_head, proto.sequence))
            received += 1
            if received == 1:
                self.first_at = loop.time()
            if received == count and not done.done():
                done.set_result(None)

        sub = await self.nc.subscribe(inbox, cb=on_msg)
        request = SubscriptionRequest(
            client_id=self.client_id,
            subject=channel,
            q_group="bench",
            durable_name="bench",
            inbox=inbox,
            max_in_flight=max_in_flight,
            ack_wait_in_secs=30,
            start_position=4,
        )
        reply = await self.nc.request(self.response.sub_requests, request.encode(), timeout=5)
        response = SubscriptionResponse.decode(reply.data)
        assert not response.error, response.error
        ack_inbox = response.ack_inbox
        subscribed.set()
        await asyncio.wait_for(done, 120)
        await sub.unsubscribe()

    async def close(self) -> None:
        request = CloseRequest(client_id=self.client_id)
        await self.nc.request(self.response.close_requests, request.encode(), timeout=5)
        await self.nc.close()


async def raw_emit(count: int) -> float:
    client = RawStan()
    await client.open()
    bodies = raw_bodies()
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    began = asyncio.get_running_loop().time()
    await client.publish_all(channel, bodies, count)
    rate = count / (asyncio.get_running_loop().time() - began)
    await client.close()
    return rate


async def emit_all(emitter: he.Emitter, channel: str, count: int) -> None:
    """``count`` events to ``channel`` through ``emit_many``, ``BATCH`` a call and at most
    ``IN_FLIGHT`` calls at once: the emit row's timed part (``_stan_cpu.py``'s too)."""

    async def send(start: int, stop: int) -> None:
        await emitter.emit_many(
            he.Event(channel, KEY_NAMES[n % KEYS], _payload(n)) for n in range(start, stop)
        )

    await in_batches(count, send, BATCH, IN_FLIGHT)


def sealed_events(channel: str, count: int) -> list[he.driver.RawRecord]:
    return sealed(channel, count, _payload, he.Context())


async def publish_all(connection: he.Connection, records: list[he.driver.RawRecord]) -> None:
    """``records`` through the driver's ``publish``, ``BATCH`` a call and at most
    ``IN_FLIGHT`` calls at once: the driver emit row's timed part (``_stan_cpu.py``'s too)."""

    async def send(start: int, stop: int) -> None:
        await connection.publish(records[start:stop])

    await in_batches(len(records), send, BATCH, IN_FLIGHT)


async def ours_emit(count: int) -> float:
    connection = he.connect(STAN_URL)
    emitter = connection.emitter()
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    await emitter.emit(he.Event(channel, "warm", _payload(0)))  # connect before timing
    loop = asyncio.get_running_loop()
    began = loop.time()
    await emit_all(emitter, channel, count)
    rate = count / (loop.time() - began)
    await connection.close()
    return rate


async def ours_publish(count: int) -> float:
    """The driver alone: records sealed beforehand, ``publish`` in batches, four in flight."""
    connection = he.connect(STAN_URL)
    records = sealed_events(f"bench-{uuid.uuid4().hex[:8]}", count)
    await connection.publish(records[:1])  # connect before timing
    loop = asyncio.get_running_loop()
    began = loop.time()
    await publish_all(connection, records)
    rate = count / (loop.time() - began)
    await connection.close()
    return rate


async def _backlog(count: int) -> str:
    client = RawStan()
    await client.open()
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    await client.publish_all(channel, _sample_body(), count)
    await client.close()
    return channel


async def raw_consume(count: int) -> float:
    channel = await _backlog(count)
    client = RawStan()
    await client.open()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await client.consume_all(channel, count)
    rate = count / (loop.time() - began)
    await client.close()
    return rate


ACTION = f"bench-{uuid.uuid4().hex[:6]}"
"""The receiver's action, one per process (each round consumes a channel of its own)."""

_RETRY_CHANNELS_MADE: set[str] = set()


async def _retry_channels(connection: he.Connection, receiver: he.Receiver, action: str) -> None:
    """Create ``action``'s retry channels (and its durable queue group on them) once per
    process, before any timing: a service's first start creates them (four channels on the
    server's file store, 20-30 ms, once), every later start joins them; the raw client has
    none to create."""
    if action in _RETRY_CHANNELS_MADE:
        return
    spec = receiver.subscriptions[action].spec
    subscription = await connection.subscribe(
        he.driver.SubscriptionSpec(group=spec.group, channels=spec.retry_channels)
    )
    await subscription.close()
    _RETRY_CHANNELS_MADE.add(action)


async def ours_consume(count: int, channel: str | None = None) -> float:
    """A receiver, timed from its start (joining its channel and its retry channels) to
    the last event handled; connected before, as the raw client is."""
    channel = channel or await _backlog(count)
    connection = he.connect(STAN_URL)
    await connection.driver.connect()  # type: ignore[attr-defined]
    receiver = connection.receiver("bench")
    handled = 0
    done = asyncio.get_running_loop().create_future()

    async def handle(ctx: he.Context, msg: he.Message[dict[str, Any]]) -> None:
        nonlocal handled
        handled += 1
        if handled == count and not done.done():
            done.set_result(None)

    receiver.subscribe(channel, action=ACTION, handler=handle)
    await _retry_channels(connection, receiver, ACTION)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await receiver.start()
    await asyncio.wait_for(done, 120)
    rate = count / (loop.time() - began)
    await receiver.close()
    await connection.close()
    return rate


async def fetch_all(connection: he.Connection, channel: str, count: int) -> Any:
    """Subscribe to ``channel`` (a group of its own), then fetch (1,024 a call), ack each
    delivery and settle each batch until ``count`` are settled: the driver consume row's
    timed part (``_stan_cpu.py``'s too). Returns the subscription, still open."""
    subscription = await connection.subscribe(
        he.driver.SubscriptionSpec(group=f"bench-{uuid.uuid4().hex[:6]}", channels=(channel,))
    )
    got = 0
    while got < count:
        deliveries = await subscription.fetch(1024)
        for delivery in deliveries:
            delivery.ack()
        await subscription.settle(deliveries)
        got += len(deliveries)
    return subscription


async def ours_driver_consume(count: int, channel: str | None = None) -> float:
    """The driver alone: fetch, ack each delivery, settle each batch."""
    channel = channel or await _backlog(count)
    connection = he.connect(STAN_URL)
    await connection.driver.connect()  # type: ignore[attr-defined]  # as the raw client is
    loop = asyncio.get_running_loop()
    began = loop.time()
    subscription = await fetch_all(connection, channel, count)
    rate = count / (loop.time() - began)
    await subscription.close()
    await connection.close()
    return rate


PROFILED = (  # for ``profile.py --paths stan``: (title, fill or None, run)
    ("emit_many", None, ours_emit),
    ("consume + ack through a receiver", _backlog, ours_consume),
    ("consume + ack, driver alone (fetch/ack/settle)", _backlog, ours_driver_consume),
)


RAW_EMIT = ("raw nats-py STAN publish loop", raw_emit)
RAW_CONSUME = ("raw nats-py STAN subscription", raw_consume)
COMPARISONS = (
    Comparison("STAN emit", RAW_EMIT, ("hexa-event emit_many", ours_emit), target=">= 0.8"),
    Comparison(
        "STAN emit, driver alone (records sealed beforehand)",
        RAW_EMIT,
        ("hexa-event driver publish", ours_publish),
    ),
    Comparison(
        "STAN consume + ack", RAW_CONSUME, ("hexa-event receiver", ours_consume), target=">= 0.8"
    ),
    Comparison(
        "STAN consume + ack, driver alone",
        RAW_CONSUME,
        ("hexa-event driver fetch + settle", ours_driver_consume),
    ),
)


async def main() -> None:
    await compare_all(cli(__doc__.splitlines()[0], 20_000), COMPARISONS)


if __name__ == "__main__":
    asyncio.run(main())
