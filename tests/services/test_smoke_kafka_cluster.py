"""The three-node Kafka cluster (``scripts/services up kafka-cluster``): every node
registered, topics replicated three times with ``min.insync.replicas=2``, and an
``acks=all`` round trip that survives one node being stopped."""

from __future__ import annotations

import time

import pytest

from hexa_event_services import Service
from hexa_event_services import unique_name as unique

pytestmark = pytest.mark.kafka_cluster

confluent_kafka = pytest.importorskip("confluent_kafka")
admin_mod = pytest.importorskip("confluent_kafka.admin")


def _topic(bootstrap: str, name: str) -> None:
    admin = admin_mod.AdminClient({"bootstrap.servers": bootstrap})
    new = admin_mod.NewTopic(name, 3, 3, config={"min.insync.replicas": "2"})
    admin.create_topics([new])[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        md = admin.list_topics(topic=name, timeout=10).topics[name]
        if md.error is None and len(md.partitions) == 3:
            assert all(len(p.replicas) == 3 for p in md.partitions.values())
            return
        assert time.monotonic() < deadline, f"topic {name} not visible: {md.error}"
        time.sleep(0.2)


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    failures: list[object] = []
    for i in range(n):
        producer.produce(
            topic,
            key=f"k{i % 10}".encode(),
            value=str(i).encode(),
            on_delivery=lambda err, _msg: err and failures.append(err),
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []


def _consume(bootstrap: str, topic: str, n: int) -> list[int]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("smoke-cluster-g"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    got: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(int(msg.value()))
    finally:
        consumer.close()
    return got


def test_every_node_is_registered(kafka_cluster: list[Service]) -> None:
    from hexa_event_services import kafka_probe

    for node in kafka_cluster:
        assert kafka_probe(node.url) == [1, 2, 3]


def test_replicated_round_trip_with_one_node_stopped(
    kafka_cluster: list[Service], kafka_cluster_bootstrap: str
) -> None:
    topic = unique("smoke-cluster")
    _topic(kafka_cluster_bootstrap, topic)
    _produce(kafka_cluster_bootstrap, topic, 500)
    kafka_cluster[2].stop()
    try:
        _produce(kafka_cluster_bootstrap, topic, 500)  # two in-sync replicas remain
        assert sorted(_consume(kafka_cluster_bootstrap, topic, 1000)) == sorted(
            [*range(500), *range(500)]
        )
    finally:
        kafka_cluster[2].start(fresh=False)
