"""Absurd numbers in a driver URL or options (400 digits, past what the client's 32-bit
settings hold) are a ConfigurationError naming the option, at connect(): not an
OverflowError from the URL parser, nor a TypeError from pulsar-client's binding."""

from __future__ import annotations

import pytest

import hexa_event as he
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions
from hexa_event.drivers.stan import StanOptions, StanSubscriptionOptions
from hexa_event.errors import ConfigurationError

HUGE = "9" * 400
STAN = "stan://127.0.0.1:4223?cluster_id=test-cluster"


@pytest.mark.parametrize(
    ("url", "option"),
    [
        (f"sqlite:///x.db?pool_size={HUGE}", "pool_size"),
        (f"sqlite:///x.db?publish_batch=-{HUGE}", "publish_batch"),
        (f"nats://127.0.0.1:4222?max_bytes={HUGE}", "max_bytes"),
        (f"nats://127.0.0.1:4222?partitions={HUGE}", "partitions"),
        (f"pulsar://127.0.0.1:6650?max_in_flight={HUGE}", "max_in_flight"),
        (f"pulsar://127.0.0.1:6650?io_threads={HUGE}", "io_threads"),
        ("pulsar://127.0.0.1:6650?operation_timeout=1e10", "operation_timeout"),
        ("pulsar://127.0.0.1:6650?connection_timeout=1e8", "connection_timeout"),
        ("pulsar://127.0.0.1:6650?send_timeout=1e8", "send_timeout"),
        ("pulsar://127.0.0.1:6650?max_in_flight=3000000000", "max_in_flight"),
        (f"{STAN}&ack_wait={HUGE}", "ack_wait"),
        (f"{STAN}&ping_interval=3000000000", "ping_interval"),
        (f"{STAN}&max_inflight=3000000000", "max_inflight"),
    ],
)
def test_an_absurd_number_in_a_url_is_refused_by_name(url: str, option: str) -> None:
    with pytest.raises(ConfigurationError, match=option) as caught:
        he.connect(url)
    assert HUGE not in str(caught.value), "the message repeats 400 digits"


@pytest.mark.parametrize(
    "make",
    [
        lambda: PulsarOptions(max_in_flight=10**400),
        lambda: PulsarOptions(partitions=10**400),
        lambda: PulsarSubscriptionOptions(receiver_queue_size=2**31),
        lambda: PulsarSubscriptionOptions(pattern_discovery=10**400),
        lambda: StanOptions(cluster_id="c", max_pub_acks_inflight=10**400),
        lambda: StanSubscriptionOptions(ack_wait=2**31),
    ],
)
def test_an_absurd_number_in_options_is_refused(make: object) -> None:
    with pytest.raises(ConfigurationError, match=r"must be an integer from \d+ to \d+"):
        make()  # type: ignore[operator]
