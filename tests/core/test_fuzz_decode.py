"""Property: whatever headers and body arrive, dispatch settles the delivery and never raises."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexa_event import Context, Message, RetryPolicy
from hexa_event import envelope as env
from hexa_event.dispatch import Dispatcher, Route, permanent_predicate
from hexa_event.driver import Delivery, Driver, Features, RawRecord, Subscription, SubscriptionSpec
from hexa_event.propagation import default_propagator


@dataclass
class Order:
    id: str
    total: int


class FakeDelivery(Delivery):
    def __init__(self, record: RawRecord) -> None:
        super().__init__(record, coordinates="c-0-1", timestamp=None)
        self.outcome: list[str] = []

    async def ack(self) -> None:
        self.outcome.append("ack")

    async def nack(self, delay: float = 0.0) -> None:
        self.outcome.append("nack")


class RecordingDriver(Driver):
    features = Features(name="recording", persistent=False)

    def __init__(self) -> None:
        self.published: list[RawRecord] = []

    async def publish(self, records: Sequence[RawRecord]) -> None:
        self.published.extend(records)

    async def subscribe(self, spec: SubscriptionSpec) -> Subscription:
        raise NotImplementedError

    async def close(self) -> None:
        return None


header_names = st.one_of(
    st.sampled_from(
        [
            "_ctx_user",
            "_ctx_correlation_id",
            "_ctx_locale",
            "_payload_encoder",
            "_reply_channel",
            env.EVENT_ID,
            env.EVENT_TIME,
            env.ATTEMPT,
            env.RETRY_AT,
            env.ROOT_EVENT_ID,
            env.SOURCE_CHANNEL,
            "traceparent",
            "baggage",
        ]
    ),
    st.text(max_size=12),
)
header_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"json", b"protobuf", b"raw", b"-1", b"99999999999999999999", b"{}"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.dictionaries(header_names, header_values, max_size=8),
    body=st.one_of(st.binary(max_size=64), st.just(b'{"id": "o", "total": 1}')),
    payload_type=st.sampled_from([None, Order, bytes, dict]),
)
def test_dispatch_settles_everything_exactly_once(
    headers: dict[str, bytes], body: bytes, payload_type: Any
) -> None:
    driver = RecordingDriver()
    handled: list[Message[Any]] = []

    async def handler(ctx: Context, msg: Message[Any]) -> None:
        handled.append(msg)

    route = Route(
        action="act",
        handler=handler,
        payload_type=payload_type,
        retry=RetryPolicy(max_retries=1, initial_delay=0),
        is_permanent=permanent_predicate(None),
        propagator=default_propagator(),
    )
    closing = asyncio.Event()
    closing.set()  # a future HEXA_RETRY_AT gives the delivery back instead of waiting
    delivery = FakeDelivery(RawRecord(channel="orders", key="k", headers=headers, body=body))
    asyncio.run(Dispatcher(driver, route, closing).handle(delivery))

    assert len(delivery.outcome) == 1
    if handled:
        assert delivery.outcome == ["ack"]
    elif delivery.outcome == ["ack"]:
        [letter] = driver.published
        assert letter.channel == "act.dlq"
        assert letter.headers[env.DEAD_LETTER_REASON] == b"poison"
        assert letter.body == body
