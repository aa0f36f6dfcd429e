"""Pulsar standalone: admin REST answers, and a pulsar-client produce/consume round trip."""

from __future__ import annotations

import json
import urllib.request

import pytest

from hexa_event_services import unique_name as unique

pytestmark = pytest.mark.pulsar

pulsar = pytest.importorskip("pulsar")


def test_admin_rest(pulsar_urls: tuple[str, str]) -> None:
    _, admin = pulsar_urls
    with urllib.request.urlopen(admin.rstrip("/") + "/admin/v2/clusters", timeout=10) as r:
        assert "standalone" in json.loads(r.read())
    with urllib.request.urlopen(admin.rstrip("/") + "/admin/v2/tenants", timeout=10) as r:
        assert "public" in json.loads(r.read())


def test_round_trip(pulsar_urls: tuple[str, str]) -> None:
    url, _ = pulsar_urls
    topic = f"persistent://public/default/{unique('smoke')}"
    client = pulsar.Client(url, operation_timeout_seconds=30)
    try:
        consumer = client.subscribe(
            topic, unique("smoke-sub"), consumer_type=pulsar.ConsumerType.Shared
        )
        producer = client.create_producer(topic)
        msg_id = producer.send(b"hello", properties={"h": "v"}, partition_key="k1")
        assert msg_id is not None
        msg = consumer.receive(timeout_millis=30_000)
        assert (msg.data(), msg.properties(), msg.partition_key()) == (b"hello", {"h": "v"}, "k1")
        consumer.acknowledge(msg)
        producer.close()
        consumer.close()
    finally:
        client.close()
