"""Property: whatever a record holds and whatever the handler does, dispatch settles the
delivery exactly once, never raises, and only ever writes copies the chain reads back."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexa_event import Context, Message, PermanentError, RetryPolicy
from hexa_event import envelope as env
from hexa_event.dispatch import Dispatcher, Route, permanent_predicate
from hexa_event.driver import Delivery, Features, Outcome, RawRecord
from hexa_event.propagation import default_propagator
from hexa_event.publishing import pipeline
from hexa_event.wire import Chain

ACTION = "act"
MAX_RETRIES = 2


@dataclass
class Order:
    id: str
    total: int


class Custom(BaseException):
    """A handler raising something that is not an Exception."""


class Publisher:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.published: list[RawRecord] = []

    async def __call__(self, records: Sequence[RawRecord]) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.published.extend(records)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


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
            env.ROOT_ACTION,
            env.SOURCE_CHANNEL,
            "traceparent",
            "baggage",
        ]
    ),
    st.text(max_size=12),
)
integers = st.one_of(st.integers(), st.integers(min_value=-5, max_value=5)).map(
    lambda n: str(n).encode()
)
header_values = st.one_of(
    st.binary(max_size=40),
    integers,
    st.sampled_from(
        [
            b"json",
            b"protobuf",
            b"raw",
            b"-1",
            b"0",
            b"nan",
            b"9" * 400,
            b"{}",
            ACTION.encode(),
            b'{"_user_identifier": ' + _deep(1000) + b"}",
        ]
    ),
)
bodies = st.one_of(
    st.binary(max_size=64),
    st.just(b'{"id": "o", "total": 1}'),
    st.just(_deep(1000)),
    st.just(b'{"id": "o", "total": 1e400}'),
)
channels = st.one_of(
    st.just("orders"),
    st.integers(min_value=-3, max_value=5).map(lambda n: f"{ACTION}.retry.{n}"),
    st.text(min_size=1, max_size=20),
)
FUZZ_EXAMPLES = int(os.environ.get("HEXA_FUZZ_EXAMPLES", "10000"))
outcomes = st.sampled_from(["return", "raise", "permanent", "base", "cancelled", "value"])


# `make quick` runs a tenth of the examples (HEXA_FUZZ_EXAMPLES); `make test` runs them all.
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    headers=st.dictionaries(header_names, header_values, max_size=8),
    attempt=st.one_of(st.none(), integers),
    own_root=st.booleans(),
    body=bodies,
    channel=channels,
    key=st.text(max_size=10),
    payload_type=st.sampled_from([None, Order, bytes, dict]),
    outcome=outcomes,
    publish_fails=st.booleans(),
    in_place=st.booleans(),
    delayed_nack=st.booleans(),
)
def test_dispatch_settles_everything_exactly_once(
    headers: dict[str, bytes],
    attempt: bytes | None,
    own_root: bool,
    body: bytes,
    channel: str,
    key: str,
    payload_type: Any,
    outcome: str,
    publish_fails: bool,
    in_place: bool,
    delayed_nack: bool,
) -> None:
    if attempt is not None:
        headers[env.ATTEMPT] = attempt
    if own_root:
        headers[env.ROOT_ACTION] = ACTION.encode()
    publish = Publisher(publish_fails)
    calls: list[int] = []

    async def handler(ctx: Context, msg: Message[Any]) -> None:
        calls.append(msg.attempt)
        assert msg.attempt >= 1
        if outcome == "raise":
            raise RuntimeError("no")
        if outcome == "permanent":
            raise PermanentError("never")
        if outcome == "base":
            raise Custom()
        if outcome == "cancelled":
            raise asyncio.CancelledError()
        if outcome == "value":
            raise ValueError(_deep(10).decode())

    policy = RetryPolicy(max_retries=MAX_RETRIES, initial_delay=0.0, in_place=in_place)
    route = Route(
        chain=Chain(action=ACTION, base=ACTION, policy=policy),
        handler=handler,
        payload_type=payload_type,
        is_permanent=permanent_predicate(None),
        propagator=default_propagator(),
    )
    features = Features(name="fuzz", persistent=True, delayed_nack=delayed_nack)
    record = RawRecord(channel=channel, key=key, headers=headers, body=body)
    delivery = Delivery(record, coordinates="c-0-1", timestamp=time.time())

    async def run() -> None:
        closing = asyncio.Event()
        dispatcher = Dispatcher(pipeline(publish), features, route, closing)
        due = await dispatcher.handle(delivery)
        if due is not None:
            assert delivery.outcome is None
            assert not delayed_nack
            assert due <= time.time() + policy.delay_cap + 1
            closing.set()  # shutting down: a waiting delivery is given back
            assert await dispatcher.handle(delivery) is None

    asyncio.run(run())

    assert delivery.outcome is not None, "every delivery is settled"
    assert len(calls) <= 1 + MAX_RETRIES
    if delivery.outcome is Outcome.NACK:
        assert delivery.delay >= 0
        return
    for copy in publish.published:
        assert all(isinstance(v, bytes) for v in copy.headers.values())
        if copy.channel == f"{ACTION}.dlq":
            assert copy.headers[env.DEAD_LETTER_REASON] in (
                b"poison",
                b"permanent-error",
                b"retries-exhausted",
            )
            assert copy.body == body
        else:
            number = int(copy.channel.rsplit(".", 1)[1])
            assert copy.channel == f"{ACTION}.retry.{number}"
            assert 1 <= number <= MAX_RETRIES
            assert copy.headers[env.ATTEMPT] == str(number + 1).encode()
    if calls and outcome == "return":
        assert not publish.published
