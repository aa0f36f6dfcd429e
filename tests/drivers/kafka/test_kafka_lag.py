"""Kafka lag: every member reports the whole group's lag per topic (high watermark minus
committed offset, read with the admin client), retry topics included."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event.testing import Collector, eventually

pytestmark = pytest.mark.kafka


async def test_every_member_reports_the_groups_lag_per_topic(kafka_bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    channel, action = f"klag-{tag}", f"klag-act-{tag}"
    conns = [
        he.connect(f"kafka://{kafka_bootstrap}", partitions=4, group_lag=True) for _ in range(2)
    ]
    release = asyncio.Event()
    began = Collector()
    receivers = []
    for n, conn in enumerate(conns):
        receiver = conn.receiver(f"svc-{n}", lag_interval=0.1)

        @receiver.subscribe(channel, action=action, retry=he.RetryPolicy(max_retries=2))
        async def block(ctx: he.Context, msg: he.Message[Any]) -> None:
            began.add(msg.id)
            await release.wait()

        receivers.append(receiver)
    count = 16

    def lags() -> list[dict[str, int]]:
        return [r.health()["actions"][action]["lag_by_channel"] for r in receivers]

    try:
        for receiver in receivers:
            await receiver.start()
        await eventually(
            lambda: all(r.health()["actions"][action]["assignment"] for r in receivers),
            within=60,
            what="both members assigned",
        )
        emitter = conns[0].emitter()
        await emitter.emit_many(he.Event(channel, f"k{i}", {"i": i}) for i in range(count))
        await began.wait_for(count, within=60)
        wanted = {channel: count, f"{action}.retry.1": 0, f"{action}.retry.2": 0}
        await eventually(lambda: lags() == [wanted, wanted], within=30, what="group lag")
        release.set()
        idle = dict.fromkeys(wanted, 0)
        await eventually(lambda: lags() == [idle, idle], within=30, what="lag back to 0")
    finally:
        release.set()
        for receiver in receivers:
            await receiver.close()
        for conn in conns:
            await conn.close()


class _CountingAdmin:
    """An AdminClient that counts its whole-cluster metadata requests."""

    def __init__(self, admin: Any) -> None:
        self._admin = admin
        self.cluster_listings = 0

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("topic") is None:
            self.cluster_listings += 1
        return self._admin.list_topics(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._admin, name)


async def test_lag_asks_only_for_the_subscribed_topics(kafka_bootstrap: str) -> None:
    """Without a pattern, a lag sample does not list every topic of the cluster (thousands of
    Python objects per sample on a busy cluster, paid for by the receiver's loop)."""
    from confluent_kafka.admin import AdminClient

    from hexa_event.drivers.kafka.lag import group_lag

    tag = uuid.uuid4().hex[:10]
    channel, missing = f"klag2-{tag}", f"klag2-missing-{tag}"
    conn = he.connect(f"kafka://{kafka_bootstrap}", partitions=2)
    try:
        await conn.emitter().emit_many(he.Event(channel, f"k{i}", {"i": i}) for i in range(5))
    finally:
        await conn.close()
    admin = _CountingAdmin(AdminClient({"bootstrap.servers": kafka_bootstrap}))
    lag = await asyncio.to_thread(
        group_lag, admin, f"g-{tag}", [channel, missing], None, earliest=True, timeout=30
    )
    assert lag == {channel: 5, missing: 0}
    assert admin.cluster_listings == 0
    by_pattern = await asyncio.to_thread(
        group_lag, admin, f"g-{tag}", [], f"klag2-{tag}", earliest=True, timeout=30
    )
    assert by_pattern == {channel: 5}
    assert admin.cluster_listings == 1  # a pattern needs every topic's name
