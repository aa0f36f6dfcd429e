"""The Pulsar driver through the raw contract (publish / subscribe / fetch / settle)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pulsar
import pytest

import hexa_event as he
from hexa_event.driver import Delivery, Outcome, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.pulsar import (
    PulsarDriver,
    PulsarOptions,
    PulsarSubscriptionOptions,
    SubscriptionType,
    partition_for_key,
)
from hexa_event.drivers.pulsar import consumer as pulsar_consumer
from hexa_event.drivers.pulsar import producer as pulsar_producer
from hexa_event.errors import (
    ChannelNotFoundError,
    ConfigurationError,
    NotStoredError,
    PartialPublishError,
    SubscriptionBusyError,
)
from hexa_event.testing import eventually

pytestmark = pytest.mark.pulsar

MakeDriver = Callable[..., Awaitable[PulsarDriver]]
DEADLINE = 60.0


def names(prefix: str = "pt") -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"{prefix}-{tag}", f"act-{tag}"


def record(channel: str, n: int, key: str | None = None, **headers: bytes) -> RawRecord:
    return RawRecord(channel, key or f"k{n % 5}", {"n": str(n).encode(), **headers}, b"%d" % n)


async def take(
    subscription: Subscription, count: int, *, settle: str | None = "ack"
) -> list[Delivery]:
    """Fetch until ``count`` deliveries arrived (within the deadline); settle them."""
    got: list[Delivery] = []
    async with asyncio.timeout(DEADLINE):
        while len(got) < count:
            batch = await subscription.fetch(count - len(got))
            assert batch, "the subscription ended early"
            for delivery in batch:
                if settle == "ack":
                    delivery.ack()
                elif settle == "nack":
                    delivery.nack()
            if settle:
                await subscription.settle(batch)
            got.extend(batch)
    return got


async def nothing_within(subscription: Subscription, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            batch = await subscription.fetch(10)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected deliveries: {[d.coordinates for d in batch]}")


# -- options -----------------------------------------------------------------------------------


def test_options_are_validated_and_secrets_redacted() -> None:
    options = PulsarOptions.from_url(
        "pulsar://s3cr3t-token@broker:6650?tenant=acme&partitions=4&tls_allow_insecure_connection=1",
        client_config={"auth_password": "hunter2"},
    )
    assert options.token == "s3cr3t-token"
    assert options.tenant == "acme"
    assert options.partitions == 4
    assert options.tls_allow_insecure_connection is True
    assert options.admin_url == "http://broker:8080"
    assert options.topic("orders") == "persistent://acme/default/orders"
    shown = repr(options) + str(options)
    assert "s3cr3t" not in shown
    assert "hunter2" not in shown
    assert "***" in shown
    assert options.admin_headers() == {"Authorization": "Bearer s3cr3t-token"}
    with_user = PulsarOptions(admin_url="http://admin:pa55@broker:8080")
    assert "pa55" not in repr(with_user)
    assert "broker:8080" in repr(with_user)
    with pytest.raises(ConfigurationError, match="partitions"):
        PulsarOptions(partitions=0)
    with pytest.raises(ConfigurationError, match="unknown Pulsar option"):
        PulsarOptions.from_url("pulsar://h:6650", partitons=3)
    with pytest.raises(ConfigurationError, match="message_router"):
        PulsarOptions(producer_config={"message_router": print})
    with pytest.raises(ConfigurationError, match="consumer_type"):
        PulsarSubscriptionOptions(consumer_config={"consumer_type": "Exclusive"})
    with pytest.raises(ConfigurationError, match="ack_timeout"):
        PulsarSubscriptionOptions(ack_timeout=5)
    with pytest.raises(ConfigurationError, match="nack_delay"):
        PulsarSubscriptionOptions(nack_delay=0.01)
    assert "KEY_SHARED" in repr(PulsarSubscriptionOptions())


def test_a_service_url_with_credentials_is_refused_without_showing_them() -> None:
    """pulsar-client refused it with a bare ValueError naming the whole host part, the
    password too ("invalid hostname: user:s3cret@broker:6650")."""
    for url in ("pulsar://user:s3cret@broker:6650", "pulsar+ssl://s3cret@broker:6651/x"):
        with pytest.raises(ConfigurationError, match="token=") as caught:
            PulsarOptions(service_url=url)
        assert "s3cret" not in str(caught.value)
        with pytest.raises(ConfigurationError) as caught:
            he.connect("pulsar://127.0.0.1:6650", service_url=url)
        assert "s3cret" not in str(caught.value)
    # The URL form connect() takes moves the user info to token=: still accepted.
    assert PulsarOptions.from_url("pulsar://s3cret@broker:6650").service_url == (
        "pulsar://broker:6650"
    )


def test_client_log_lines_go_to_stderr_unless_asked_for_logging() -> None:
    """pulsar-client with a Python logger aborts at exit now and then (its issue #256): the
    client writes its own warnings to stderr unless the user chooses logging."""
    from hexa_event.drivers.pulsar.options import CLIENT_LOGGER

    assert isinstance(PulsarOptions().client_kwargs()["logger"], pulsar.FileLogger)
    chosen = PulsarOptions.from_url("pulsar://h:6650?client_log=logging")
    assert chosen.client_kwargs()["logger"] is CLIENT_LOGGER
    with pytest.raises(ConfigurationError, match="client_log must be 'stderr' or 'logging'"):
        PulsarOptions(client_log="stdout")  # type: ignore[arg-type]


def test_partition_for_key_is_javas_string_hash() -> None:
    # String.hashCode: "k0" = 107*31 + 48 = 3365; "hello" = 99162322; "polygenelubricants"
    # hashes to Integer.MIN_VALUE, whose sign bit is cleared to 0.
    assert partition_for_key("k0", 7) == 3365 % 7
    assert partition_for_key("hello", 10) == 99162322 % 10
    assert partition_for_key("polygenelubricants", 5) == 0
    assert partition_for_key("é😀", 1000) == ((233 * 31 + 0xD83D) * 31 + 0xDE00) % 1000


async def test_a_send_the_client_refuses_fails_it_and_the_rest_only() -> None:
    """pulsar-client refuses a ``send_async`` on the spot (here its queue is full): the
    records handed over before it are stored, it and those after it are known not stored."""
    handed: list[Any] = []

    def send_async(message: Any, callback: Callable[..., None]) -> None:
        if len(handed) == 2:
            raise pulsar.ProducerQueueIsFull("full")
        handed.append(message)
        callback(pulsar.Result.Ok, None)

    producers = pulsar_producer.PulsarProducers(None, PulsarOptions())  # type: ignore[arg-type]
    producers._senders["c"] = send_async
    with pytest.raises(PartialPublishError) as failed:
        await producers.publish([record("c", n) for n in range(5)], {"c": 0})
    assert failed.value.stored == {0, 1}
    assert set(failed.value.failed) == {2, 3, 4}
    assert all(isinstance(e, NotStoredError) for e in failed.value.failed.values())
    assert "ProducerQueueIsFull" in str(failed.value.failed[2])
    assert all(e.retriable for e in failed.value.failed.values())


# -- publish / subscribe ---------------------------------------------------------------------


async def test_round_trip_keeps_key_headers_and_bytes(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    sent = [record(channel, n, bin=b"\xff\x00\x80") for n in range(20)]
    await driver.publish(sent)
    subscription = await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
    # Pulsar counts its backlog in stored entries: a batch of several records counts once.
    await eventually(lambda: (subscription.status().lag or 0) > 0, within=DEADLINE, what="lag")
    got = await take(subscription, 20)
    by_n = {d.record.headers["n"]: d for d in got}
    assert set(by_n) == {str(n).encode() for n in range(20)}
    for n in range(20):
        delivery = by_n[str(n).encode()]
        assert delivery.record.channel == channel
        assert delivery.record.key == f"k{n % 5}"
        assert delivery.record.body == b"%d" % n
        assert delivery.record.headers["bin"] == b"\xff\x00\x80"
        assert delivery.delivery_count == 1
        assert delivery.timestamp is not None
        assert abs(delivery.timestamp - time.time()) < 120
        assert channel in delivery.coordinates
        assert isinstance(delivery.native, pulsar.Message)
    # Per key in publish order.
    for key in {f"k{n}" for n in range(5)}:
        ns = [int(d.record.headers["n"]) for d in got if d.record.key == key]
        assert ns == sorted(ns)
    status = subscription.status()
    assert status.assignment == (f"{channel} (Key_Shared)",)
    assert status.error == ""
    # The backlog is read from the admin API in the background: 0 once all are acked.
    await eventually(lambda: subscription.status().lag == 0, within=DEADLINE, what="lag 0")
    await subscription.close()
    assert await subscription.fetch(10) == []


async def test_event_time_comes_from_the_header(make_driver: MakeDriver, pulsar_url: str) -> None:
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    client = pulsar.Client(pulsar_url)
    try:
        consumer = client.subscribe(
            f"persistent://public/default/{channel}",
            action,
            initial_position=pulsar.InitialPosition.Earliest,
        )
        await driver.publish([record(channel, 1, HEXA_EVENT_TIME=b"1700000000123")])
        message = await asyncio.to_thread(consumer.receive, 30_000)
        assert message.event_timestamp() == 1700000000123
        assert message.partition_key() == "k1"
        assert message.properties()["n"] == "1"
    finally:
        client.close()


async def test_missing_topic_without_provisioning(make_driver: MakeDriver) -> None:
    driver = await make_driver(provision=False)
    channel, action = names()
    with pytest.raises(ChannelNotFoundError, match=channel):
        await driver.publish([record(channel, 1)])
    with pytest.raises(ChannelNotFoundError, match="provision=True"):
        await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))


async def test_partitioned_topics_route_keys_by_our_hash(make_driver: MakeDriver) -> None:
    driver = await make_driver(partitions=4)
    channel, action = names()
    await driver.provision([channel])
    keys = [f"key-{n}" for n in range(40)]
    await driver.publish([record(channel, n, key=k) for n, k in enumerate(keys)])
    subscription = await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
    got = await take(subscription, len(keys))
    for delivery in got:
        partition = int(delivery.coordinates.split("@")[0].rsplit("-", 1)[1])
        assert partition == partition_for_key(delivery.record.key, 4), delivery.coordinates
        assert delivery.record.channel == channel
    assert len({d.coordinates.split("@")[0] for d in got}) > 1


async def test_native_is_the_public_message_and_coordinates_name_its_position(
    make_driver: MakeDriver,
) -> None:
    """The driver reads through pulsar-client's binding objects; users still get its public
    ``pulsar.Message``, and coordinates (made on demand) name the message's position."""
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    await driver.publish([record(channel, 1), record(channel, 2, b=b"\xff")])
    subscription = await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
    got = await take(subscription, 2)
    for delivery in got:
        native = delivery.native
        assert isinstance(native, pulsar.Message)
        assert native.data() == delivery.record.body
        assert native.partition_key() == delivery.record.key
        mid = native.message_id()
        where = f"{channel}@{mid.ledger_id()}:{mid.entry_id()}:{mid.batch_index()}"
        assert delivery.coordinates == where
    assert [d.record.headers for d in got] == [{"n": b"1"}, {"n": b"2", "b": b"\xff"}]


def test_a_delivery_sets_every_field_of_the_base_class() -> None:
    """PulsarDelivery sets the base class's slots itself (the hot path) and reads the rest
    from the message: a slot it misses (one added to Delivery later) fails here."""

    class MessageId:
        def ledger_id(self) -> int:
            return 7

        def entry_id(self) -> int:
            return 8

        def batch_index(self) -> int:
            return 9

    class Message:  # what the delivery reads of pulsar-client's message
        def message_id(self) -> MessageId:
            return MessageId()

        def topic_name(self) -> str:
            return "persistent://public/default/orders-partition-1"

        def redelivery_count(self) -> int:
            return 2

        def publish_timestamp(self) -> int:
            return 1_700_000_000_500

    reader: Any = None
    record = RawRecord("orders", "k", {}, b"")
    delivery = pulsar_consumer.PulsarDelivery(record, Message(), reader)
    slots = {name for kind in Delivery.__mro__ for name in getattr(kind, "__slots__", ())}
    for name in slots:
        getattr(delivery, name)  # raises AttributeError for a slot never set
    assert delivery.record is record
    assert (delivery.outcome, delivery.delay) == (None, 0.0)
    assert delivery.coordinates == "orders-partition-1@7:8:9"
    assert delivery.delivery_count == 3
    assert delivery.timestamp == 1_700_000_000.5
    delivery.nack(2.0)
    assert (delivery.outcome, delivery.delay) == (Outcome.NACK, 2.0)


# -- subscription types ----------------------------------------------------------------------


async def test_two_members_share_the_work_and_an_exclusive_third_is_refused(
    make_driver: MakeDriver,
) -> None:
    channel, action = names()
    emitting = await make_driver()
    await emitting.provision([channel])
    first = await (await make_driver()).subscribe(
        SubscriptionSpec(group=action, channels=(channel,), prefetch=20)
    )
    second = await (await make_driver()).subscribe(
        SubscriptionSpec(group=action, channels=(channel,), prefetch=20)
    )
    with pytest.raises(SubscriptionBusyError) as refused:
        await (await make_driver()).subscribe(
            SubscriptionSpec(
                group=action,
                channels=(channel,),
                options=PulsarSubscriptionOptions(type=SubscriptionType.EXCLUSIVE),
            )
        )
    text = str(refused.value)
    assert action in text
    assert "Exclusive" in text
    assert "KEY_SHARED" in text
    await emitting.publish([record(channel, n, key=f"key-{n}") for n in range(200)])
    counts = {first: 0, second: 0}

    async def drain(subscription: Subscription) -> None:
        while sum(counts.values()) < 200:
            try:
                async with asyncio.timeout(1):
                    batch = await subscription.fetch(10)
            except TimeoutError:
                continue
            for delivery in batch:
                delivery.ack()
            await subscription.settle(batch)
            counts[subscription] += len(batch)

    async with asyncio.timeout(DEADLINE):
        await asyncio.gather(drain(first), drain(second))
    assert sum(counts.values()) == 200
    assert counts[first] > 0, counts
    assert counts[second] > 0, counts


async def test_a_second_exclusive_member_is_refused(make_driver: MakeDriver) -> None:
    channel, action = names()
    exclusive = PulsarSubscriptionOptions(type=SubscriptionType.EXCLUSIVE)
    spec = SubscriptionSpec(group=action, channels=(channel,), options=exclusive)
    await (await make_driver()).subscribe(spec)
    with pytest.raises(SubscriptionBusyError, match=f"'{action}' \\(Exclusive\\)"):
        await (await make_driver()).subscribe(spec)


async def test_exclusive_never_acks_an_unsettled_delivery(
    make_driver: MakeDriver,
) -> None:
    channel, action = names()
    driver = await make_driver()
    await driver.provision([channel])
    await driver.publish([record(channel, n, key="one") for n in range(10)])
    spec = SubscriptionSpec(
        group=action,
        channels=(channel,),
        options=PulsarSubscriptionOptions(type=SubscriptionType.EXCLUSIVE),
    )
    subscription = await driver.subscribe(spec)
    got = await take(subscription, 10, settle=None)
    # Settle all but the fourth, out of order.
    for delivery in reversed(got):
        if delivery is not got[3]:
            delivery.ack()
    await subscription.settle([d for d in got if d is not got[3]])
    await subscription.close()
    again = await (await make_driver()).subscribe(spec)
    back = await take(again, 1)
    assert back[0].record.headers["n"] == b"3"
    await nothing_within(again, 2.0)


# -- nack, delays, redelivery ----------------------------------------------------------------


async def test_nack_is_redelivered_after_its_delay_with_a_higher_count(
    make_driver: MakeDriver,
) -> None:
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    await driver.publish([record(channel, 1), record(channel, 2)])
    subscription = await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
    got = await take(subscription, 2, settle=None)
    got[0].ack()
    got[1].nack(1.5)
    nacked_at = time.monotonic()
    await subscription.settle(got)
    back = await take(subscription, 1)
    assert time.monotonic() - nacked_at >= 1.5
    assert back[0].record.headers == got[1].record.headers
    assert back[0].delivery_count == 2
    await nothing_within(subscription, 1.0)


async def test_delayed_publish_is_held_until_not_before(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    subscription = await driver.subscribe(
        SubscriptionSpec(
            group=action,
            channels=(channel,),
            options=PulsarSubscriptionOptions(type=SubscriptionType.SHARED),
        )
    )
    due = time.time() + 3.0
    await driver.publish([RawRecord(channel, "k", {}, b"later", not_before=due)])
    await driver.publish([RawRecord(channel, "k", {}, b"now")])
    first = await take(subscription, 1)
    assert first[0].record.body == b"now"
    later = await take(subscription, 1)
    assert later[0].record.body == b"later"
    # Pulsar rounds deliver-at to its tick (1 s by default), so allow one tick early.
    assert time.time() >= due - 1.1


async def test_prefetch_room_is_freed_by_settle_once(make_driver: MakeDriver) -> None:
    """A delivery holds its place of the prefetch window until it is settled (written with
    ``settle``), not merely acked; settling the same deliveries again frees nothing more."""
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    await driver.publish([record(channel, n) for n in range(9)])
    spec = SubscriptionSpec(group=action, channels=(channel,), prefetch=3)
    subscription = await driver.subscribe(spec)
    first = await take(subscription, 3, settle=None)
    for delivery in first:
        delivery.ack()
    await nothing_within(subscription, 1.0)  # acked, not settled: still in the window
    await subscription.settle(first)
    await subscription.settle(first)  # a retried settle (the core retries failed ones)
    second = await take(subscription, 3, settle=None)
    await nothing_within(subscription, 1.0)  # three out, unsettled: the window is full
    for delivery in second:
        delivery.ack()
    await subscription.settle(second)
    third = await take(subscription, 3)
    got = sorted(d.record.headers["n"] for d in first + second + third)
    assert got == [str(n).encode() for n in range(9)]


async def test_one_place_freed_in_a_full_window_lets_one_more_through(
    make_driver: MakeDriver,
) -> None:
    """The receive thread waits a moment for room for several messages, then takes what
    room there is: deliveries held unsettled for long never stop the others."""
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    await driver.publish([record(channel, n) for n in range(40)])
    spec = SubscriptionSpec(group=action, channels=(channel,), prefetch=16)
    subscription = await driver.subscribe(spec)
    held = await take(subscription, 16, settle=None)
    await nothing_within(subscription, 0.5)  # the window is full
    for settled in range(1, 4):  # one place at a time, the rest held
        held[-settled].ack()
        await subscription.settle([held[-settled]])
        (more,) = await take(subscription, 1, settle=None)
        assert more.record.headers["n"] not in {d.record.headers["n"] for d in held}
        await nothing_within(subscription, 0.3)


async def test_unsettled_deliveries_come_back_after_close(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    channel, action = names()
    await driver.provision([channel])
    await driver.publish([record(channel, n) for n in range(5)])
    spec = SubscriptionSpec(group=action, channels=(channel,))
    subscription = await driver.subscribe(spec)
    got = await take(subscription, 5, settle=None)
    for delivery in got[:2]:
        delivery.ack()
    await subscription.settle(got[:2])
    await subscription.close()
    again = await (await make_driver()).subscribe(spec)
    back = await take(again, 3)
    assert sorted(d.record.headers["n"] for d in back) == [b"2", b"3", b"4"]
    assert all(d.delivery_count >= 1 for d in back)
    await nothing_within(again, 1.5)


async def test_retry_channels_get_a_shared_consumer(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    channel, action = names()
    retry = f"{action}.retry.1"
    spec = SubscriptionSpec(group=action, channels=(channel, retry), retry_channels=(retry,))
    subscription = await driver.subscribe(spec)
    assert subscription.status().assignment == (
        f"{channel} (Key_Shared)",
        f"{retry} (Shared)",
    )
    await driver.publish([RawRecord(retry, "k", {}, b"r"), RawRecord(channel, "k", {}, b"m")])
    got = await take(subscription, 2)
    assert {d.record.channel for d in got} == {channel, retry}


async def test_fetch_returns_empty_once_the_driver_closes(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    channel, action = names()
    subscription = await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
    waiting = asyncio.create_task(subscription.fetch(10))
    await asyncio.sleep(0.2)
    await driver.close()
    assert await asyncio.wait_for(waiting, 15) == []


# -- Go-compatible body ----------------------------------------------------------------------


async def test_go_body_is_go_hexa_events_envelope(make_driver: MakeDriver, pulsar_url: str) -> None:
    driver = await make_driver(body="go")
    channel, action = names()
    await driver.provision([channel])
    client = pulsar.Client(pulsar_url)
    try:
        raw = client.subscribe(
            f"persistent://public/default/{channel}",
            f"{action}-raw",
            initial_position=pulsar.InitialPosition.Earliest,
        )
        subscription = await driver.subscribe(SubscriptionSpec(group=action, channels=(channel,)))
        await driver.publish([RawRecord(channel, "k", {"_payload_encoder": b"json"}, b'{"a":1}')])
        message = await asyncio.to_thread(raw.receive, 30_000)
        envelope = json.loads(message.data())
        assert envelope == {
            "header": {"_payload_encoder": base64.b64encode(b"json").decode()},
            "payload": base64.b64encode(b'{"a":1}').decode(),
        }
        assert message.partition_key() == "k"
        assert message.properties() == {}
        got = await take(subscription, 1)
        assert got[0].record.body == b'{"a":1}'
        assert got[0].record.headers == {"_payload_encoder": b"json"}
    finally:
        client.close()


async def test_a_pattern_finds_topics_created_after_subscribing(make_driver: MakeDriver) -> None:
    driver = await make_driver()
    prefix = f"pat-{uuid.uuid4().hex[:8]}"
    options = PulsarSubscriptionOptions(pattern_discovery=1)
    subscription = await driver.subscribe(
        SubscriptionSpec(group=f"act-{prefix}", pattern=f"{prefix}-.*", options=options)
    )
    assert subscription.status().assignment == (f"pattern {prefix}-.* (Key_Shared)",)
    channel = f"{prefix}-late"
    await driver.provision([channel])
    async with asyncio.timeout(DEADLINE):
        while True:  # until the consumer has found the topic, then the record arrives
            await driver.publish([RawRecord(channel, "k", {}, b"x")])
            try:
                async with asyncio.timeout(2):
                    got = await subscription.fetch(1)
                break
            except TimeoutError:
                continue
    assert got[0].record.channel == channel
