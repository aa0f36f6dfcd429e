"""Kafka: topics made through the admin API (auto-create is off), then a produce/consume
round trip with confluent-kafka and with aiokafka."""

from __future__ import annotations

import asyncio
import time

import pytest

from hexa_event_services import unique_name as unique

pytestmark = pytest.mark.kafka

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_mod = pytest.importorskip("confluent_kafka.admin")


def _create_topic(bootstrap: str, name: str) -> None:
    admin = admin_mod.AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [admin_mod.NewTopic(name, num_partitions=1, replication_factor=1)]
    )
    futures[name].result(timeout=30)


def _delete_topic(bootstrap: str, name: str) -> None:
    admin = admin_mod.AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([name])[name].result(timeout=30)


def test_auto_create_is_off(kafka_bootstrap: str) -> None:
    admin = admin_mod.AdminClient({"bootstrap.servers": kafka_bootstrap})
    name = unique("smoke-absent")
    md = admin.list_topics(topic=name, timeout=10)
    assert md.topics[name].error is not None, "broker auto-created a topic on metadata request"
    assert name not in admin.list_topics(timeout=10).topics


def test_confluent_round_trip(kafka_bootstrap: str) -> None:
    topic = unique("smoke-ck")
    _create_topic(kafka_bootstrap, topic)
    try:
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True}
        )
        reports: list[object] = []
        producer.produce(
            topic,
            key=b"k1",
            value=b"hello",
            headers=[("h", b"v")],
            on_delivery=lambda err, msg: reports.append(err or msg),
        )
        assert producer.flush(30) == 0
        assert len(reports) == 1
        assert not isinstance(reports[0], confluent_kafka.KafkaError), reports[0]

        consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": unique("smoke-ck-group"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + 60
            msg = None
            while msg is None and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    msg = m
                elif m is not None and not m.error().retriable():
                    pytest.fail(f"consumer error: {m.error()}")
            assert msg is not None, "no message within 60 s"
            assert (msg.key(), msg.value(), msg.headers()) == (b"k1", b"hello", [("h", b"v")])
            consumer.commit(message=msg, asynchronous=False)
        finally:
            consumer.close()
    finally:
        _delete_topic(kafka_bootstrap, topic)


async def test_aiokafka_round_trip(kafka_bootstrap: str) -> None:
    aiokafka = pytest.importorskip("aiokafka")
    topic = unique("smoke-aio")
    await asyncio.to_thread(_create_topic, kafka_bootstrap, topic)
    try:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            meta = await asyncio.wait_for(
                producer.send_and_wait(topic, b"hello", key=b"k1", headers=[("h", b"v")]), 30
            )
            assert meta.offset == 0
        finally:
            await producer.stop()

        consumer = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=unique("smoke-aio-group"),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), 60)
            assert (msg.key, msg.value, list(msg.headers)) == (b"k1", b"hello", [("h", b"v")])
            await consumer.commit()
        finally:
            await consumer.stop()
    finally:
        await asyncio.to_thread(_delete_topic, kafka_bootstrap, topic)
