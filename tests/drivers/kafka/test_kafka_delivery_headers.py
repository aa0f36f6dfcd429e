"""A Kafka delivery's headers are its client's (name, value) pairs read-only
(:class:`PairHeaders`): no dict is built per record unless they are read by name, and the
core reads a record of ours from the pairs by position."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Message
from kafka_stub_member import StubMember

import hexa_event as he
from hexa_event.dispatch import Dispatcher, Route, permanent_predicate
from hexa_event.driver import Features, PairHeaders, SubscriptionSpec
from hexa_event.drivers.kafka.consumer import KafkaSubscription
from hexa_event.drivers.kafka.offsets import PartitionState
from hexa_event.drivers.kafka.options import KafkaOptions
from hexa_event.propagation import default_propagator
from hexa_event.publishing import pipeline
from hexa_event.wire import Chain

pytestmark = pytest.mark.kafka


@dataclass
class Order:
    id: str


async def _nowhere(records: Any) -> None:
    raise AssertionError("nothing is published")


async def _never(ctx: he.Context, msg: he.Message[Any]) -> None:
    raise AssertionError("not called")


async def _fetched(messages: list[Message]) -> list[Any]:
    member = StubMember()
    spec = SubscriptionSpec(group="g", channels=("a",), prefetch=100)
    sub = KafkaSubscription(KafkaOptions(bootstrap_servers="127.0.0.1:1"), spec, None)
    sub._loop = asyncio.get_running_loop()
    sub._members = [member]  # type: ignore[list-item]
    sub._partitions[("a", 0)] = PartitionState(("a", 0), member, 0)
    sub.on_messages(member, messages)  # type: ignore[arg-type]
    return list(await sub.fetch(100))


async def test_headers_are_the_pairs_read_as_a_dict() -> None:
    null = [("x", b"1"), ("empty", None), ("dup", b"1"), ("dup", b"2"), ("blank", b"")]
    messages = [
        Message(topic="a", partition=0, offset=0, key=b"k", value=b"v", headers=null),
        Message(topic="a", partition=0, offset=1, key=b"k", value=b"v"),
    ]
    with_pairs, without = await _fetched(messages)
    headers = with_pairs.record.headers
    assert isinstance(headers, PairHeaders)
    assert headers.pairs == null  # the client's pairs as they come
    assert headers == {"x": b"1", "empty": b"", "dup": b"2", "blank": b""}
    assert headers.get("empty") == b""
    assert messages[0].headers() == null  # the user's native message is untouched
    assert without.record.headers == {}
    assert dict(without.record.headers) == {}


async def test_the_one_pass_reads_a_sealed_record_from_its_pairs() -> None:
    sealed = he.envelope.Envelope().seal(he.Event("a", "k", Order("o-1")))
    message = Message(
        topic="a",
        partition=0,
        offset=0,
        key=b"k",
        value=sealed.body,
        headers=list(sealed.headers.items()),
    )
    (delivery,) = await _fetched([message])
    route = Route(
        chain=Chain(action="act", base="act", policy=he.RetryPolicy(), dedup_ids="event"),
        handler=_never,
        payload_type=Order,
        is_permanent=permanent_predicate(None),
        propagator=default_propagator(),
    )
    features = Features(name="t", persistent=True)
    dispatcher = Dispatcher(pipeline(_nowhere), features, route, asyncio.Event())
    read = dispatcher.first(delivery)
    assert read is not None
    ctx, msg = read
    assert delivery.record.headers._dict is None, "read by position: no dict built"
    assert msg.headers is delivery.record.headers  # read-only already: handed as it is
    assert msg.payload == Order("o-1")
    assert msg.id == ctx.event_id == sealed.headers[he.envelope.EVENT_ID].decode()
    assert msg.headers == sealed.headers
