"""Issue 9 defects rooted in the Kafka driver, one test each, through the raw contract."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from hexa_event.driver import Delivery, RawRecord, Subscription, SubscriptionSpec
from hexa_event.drivers.kafka import KafkaDriver, KafkaOptions
from hexa_event.drivers.kafka.producer import KafkaProducer
from hexa_event.errors import ConfigurationError, DriverError, InvalidEventError
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"kd-{tag}", f"kdg-{tag}"


async def _fetch_n(sub: Subscription, n: int, within: float = 30.0) -> list[Delivery]:
    got: list[Delivery] = []
    async with asyncio.timeout(within):
        while len(got) < n:
            got.extend(await sub.fetch(n - len(got)))
    return got


# -- #4: headers are bytes-only ------------------------------------------------------------------


async def test_null_header_value_reaches_the_core_as_empty_bytes(kafka_bootstrap: str) -> None:
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.provision([channel])
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        producer.produce(
            channel,
            b"{}",
            key=b"k",
            headers=[("traceparent", traceparent), ("empty", None), ("dup", b"1"), ("dup", b"2")],
        )
        assert producer.flush(10) == 0
        sub = await driver.subscribe(SubscriptionSpec(group=group, channels=(channel,)))
        (delivery,) = await _fetch_n(sub, 1)
        headers = delivery.record.headers
        assert all(isinstance(v, bytes) for v in headers.values()), headers
        assert headers["empty"] == b""
        assert headers["traceparent"] == traceparent
        assert headers["dup"] == b"2"
        delivery.ack()
        await sub.settle([delivery])
        await sub.close()
    finally:
        await driver.close()


async def test_publish_refuses_headers_that_are_not_bytes(kafka_bootstrap: str) -> None:
    channel, _ = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap)
    try:
        for bad in ("text", None, 3):
            record = RawRecord(channel, "k", {"h": bad}, b"{}")  # type: ignore[dict-item]
            with pytest.raises(InvalidEventError, match="not bytes"):
                await driver.publish([record])
    finally:
        await driver.close()


# -- #12: secrets never shown -------------------------------------------------------------------


async def test_pem_and_oauth_config_from_the_url_are_redacted() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    from urllib.parse import quote

    url = (
        "kafka://127.0.0.1:1?security.protocol=SSL"
        f"&ssl.key.pem={quote(pem)}"
        f"&sasl.oauthbearer.config={quote('principal=bob oauthsecretvalue')}"
        "&ssl.certificate.pem=CERTPEMVALUE&ssl.keystore.password=ksPASSWORD"
    )
    options = KafkaOptions.from_url(url)
    driver = KafkaDriver(options)
    try:
        texts = [repr(options), str(options), repr(driver), str(driver)]
        with pytest.raises(DriverError) as caught:
            await driver.publish([RawRecord("t", "k", {}, b"x")])
        texts.append(str(caught.value))
        for text in texts:
            for secret in ("MIIEvQIBADAN", "oauthsecretvalue", "ksPASSWORD", "CERTPEMVALUE"):
                assert secret not in text, text
    finally:
        await driver.close()


# -- #14: librdkafka logs through Python logging, admin client released at close --------------

_LOGGING_SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys, time
    from hexa_event.drivers.kafka import KafkaDriver
    from hexa_event.errors import DriverError

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logging.getLogger("hexa_event.drivers.kafka.librdkafka").addHandler(Keep())
    logging.getLogger("hexa_event.drivers.kafka.librdkafka").setLevel(logging.DEBUG)

    async def main():
        driver = KafkaDriver(bootstrap_servers="127.0.0.1:1", metadata_timeout=1.0)
        for _ in range(2):
            try:
                await driver.provision(["some-topic"])
            except DriverError:
                pass
            await asyncio.sleep(1.1)
        await driver.close()
        assert driver._admin is None
        seen = len(records)
        await asyncio.sleep(2.0)
        print(f"LOGGED {seen} AFTER_CLOSE {len(records) - seen}")

    asyncio.run(main())
    """
)


def test_librdkafka_lines_go_through_python_logging_and_stop_at_close(tmp_path: Path) -> None:
    script = tmp_path / "admin_logs.py"
    script.write_text(_LOGGING_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "%3|" not in result.stderr, result.stderr[-2000:]
    assert "FAIL" not in result.stderr, result.stderr[-2000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("LOGGED")]
    logged, after = int(line.split()[1]), int(line.split()[3])
    assert logged >= 1, "librdkafka's connect failures did not reach Python logging"
    assert after == 0, f"{after} librdkafka lines after close"


# -- #15: an unreachable broker fails publishes fast -------------------------------------------


async def test_publishes_to_an_unreachable_broker_fail_fast_together(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    driver = KafkaDriver(bootstrap_servers="127.0.0.1:1", metadata_timeout=2.0)
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(driver.publish([RawRecord(f"t-{i}", f"k{i}", {}, b"x")]) for i in range(10)),
            return_exceptions=True,
        )
        took = time.monotonic() - started
        assert all(isinstance(r, DriverError) for r in results), results
        assert "127.0.0.1:1" in str(results[0])
        assert "reachable" in str(results[0])
        # One bounded lookup, not ten serialised ones.
        assert took < 2.0 + 2.0, f"took {took:.1f}s"
    finally:
        await driver.close()


# -- #17: bad URLs and channel names say what to change ----------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("kafka://h:99999", "1 to 65535"),
        ("kafka://h:notaport", "1 to 65535"),
        ("kafka://h:", "1 to 65535"),
        ("kafka://h:9092,b:x", "1 to 65535"),
        ("kafka://h:9092,,b", "host:port"),
    ],
)
def test_bad_kafka_url_is_a_configuration_error(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        KafkaOptions.from_url(url)


@pytest.mark.parametrize("channel", ["a\x00b", "orders/eu", "ü", ".", "x" * 250, ""])
async def test_channel_names_kafka_refuses_are_refused_first(channel: str) -> None:
    driver = KafkaDriver(bootstrap_servers="127.0.0.1:1")
    try:
        with pytest.raises(InvalidEventError, match="channel"):
            await driver.publish([RawRecord(channel, "k", {}, b"x")])
        with pytest.raises(ConfigurationError, match="channel"):
            await driver.provision([channel])
    finally:
        await driver.close()


# -- #19: members started one after the other share the source channel -----------------------


async def test_members_started_one_after_the_other_share_the_channel(
    kafka_bootstrap: str,
) -> None:
    channel, group = _names()
    retries = tuple(f"{group}.retry.{n}" for n in range(1, 5))
    spec = SubscriptionSpec(group=group, channels=(channel, *retries), retry_channels=retries)
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    other = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=3)
    handled: dict[str, Counter[str]] = {"first": Counter(), "second": Counter()}
    stop = asyncio.Event()

    async def member(name: str, sub: Subscription) -> None:
        while not stop.is_set():
            batch = await sub.fetch(50)
            if not batch:
                return
            for d in batch:
                handled[name][d.coordinates] += 1
                await asyncio.sleep(0.002)  # some work, so the second member joins mid-way
                d.ack()
            await sub.settle(batch)

    try:
        await driver.provision([channel, *retries])
        first = await driver.subscribe(spec)
        second = await other.subscribe(spec)
        await eventually(
            lambda: any(p.startswith(f"{channel}-") for p in second.status().assignment),
            within=30,
            what="the second member to hold a partition of the source channel",
        )
        await driver.publish(
            [RawRecord(channel, f"k{i}", {}, str(i).encode()) for i in range(1000)]
        )
        tasks = [
            asyncio.create_task(member("first", first)),
            asyncio.create_task(member("second", second)),
        ]

        def total() -> int:
            return len(set(handled["first"]) | set(handled["second"]))

        await eventually(lambda: total() >= 1000, within=60, what="all 1,000 events")
        stop.set()
        await first.close()
        await second.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        counts = {k: len(v) for k, v in handled.items()}
        assert handled["first"], counts
        assert handled["second"], counts
    finally:
        await driver.close()
        await other.close()


# -- #20: a clean close keeps the acks above the watermark -------------------------------------


async def test_acks_above_the_watermark_are_not_redelivered_after_a_clean_close(
    kafka_bootstrap: str,
) -> None:
    channel, group = _names()
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    other = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.publish([RawRecord(channel, f"k{i}", {}, b"x") for i in range(300)])
        spec = SubscriptionSpec(group=group, channels=(channel,), prefetch=300)
        sub = await driver.subscribe(spec)
        got = await _fetch_n(sub, 300)
        slow = {5, 77, 250}  # handlers still running at close: given back
        for i, d in enumerate(got):
            if i not in slow:
                d.ack()
        await sub.settle([d for d in got if d.outcome is not None])
        for i in sorted(slow):
            got[i].nack()
        await sub.close()
        nxt = await other.subscribe(spec)
        again = await _fetch_n(nxt, 3)
        assert {d.coordinates for d in again} == {f"{channel}-0-{i}" for i in slow}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await nxt.fetch(10)  # nothing acked comes again
        for d in again:
            d.ack()
        await nxt.settle(again)
        await nxt.close()
    finally:
        await driver.close()
        await other.close()


async def test_retry_group_starts_where_the_action_group_left_off(kafka_bootstrap: str) -> None:
    """Upgrading to the separate retry group (or leaving an eager strategy) does not read
    the retry topics again from the start: <group>.retry starts at <group>'s offsets."""
    from confluent_kafka import Consumer, TopicPartition

    channel, group = _names()
    retry = f"{group}.retry.1"
    driver = KafkaDriver(bootstrap_servers=kafka_bootstrap, partitions=1)
    try:
        await driver.publish([RawRecord(retry, "k", {}, str(i).encode()) for i in range(5)])
        await driver.provision([channel])
        old = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
        await asyncio.to_thread(
            old.commit, offsets=[TopicPartition(retry, 0, 3)], asynchronous=False
        )
        old.close()
        spec = SubscriptionSpec(group=group, channels=(channel, retry), retry_channels=(retry,))
        sub = await driver.subscribe(spec)
        got = await _fetch_n(sub, 2)
        assert [d.coordinates for d in got] == [f"{retry}-0-3", f"{retry}-0-4"]
        for d in got:
            d.ack()
        await sub.settle(got)
        await sub.close()
    finally:
        await driver.close()


# -- a publish in flight when the producer closes ------------------------------------------------


async def test_a_publish_the_broker_did_not_acknowledge_by_close_fails() -> None:
    """Close flushes for at most ``flush_timeout``: a record still unacknowledged then (its
    broker gone) fails its publish call, which waited for ever for a report nothing
    served any more."""
    producer = KafkaProducer(
        {"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 120_000, "log_level": 0},
        error_cb=lambda err: None,
        scrub=str,
    )
    publish = asyncio.ensure_future(producer.publish([RawRecord("t", "k", {}, b"x")]))
    await eventually(lambda: producer._pending > 0, within=5, what="the record produced")
    await producer.close(flush_timeout=0.2)
    with pytest.raises(DriverError, match="closed before the broker acknowledged"):
        await asyncio.wait_for(publish, 10)
