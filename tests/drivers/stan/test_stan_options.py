"""STAN options: URLs, validation, redaction (no server needed)."""

from __future__ import annotations

import socket
import time

import pytest

import hexa_event
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.stan import StanDriver, StanOptions, StanSubscriptionOptions
from hexa_event.drivers.stan.consumer import StanSubscription
from hexa_event.drivers.stan.options import check_channel
from hexa_event.drivers.stan.protocol import StartPosition
from hexa_event.errors import ConfigurationError, DriverError


def test_url_forms() -> None:
    options = StanOptions.from_url(
        "stan://127.0.0.1:4223,127.0.0.2:4223?cluster_id=c1&client_id=svc-1&ack_wait=5"
        "&delayed_nack=true&ack_timeout=2.5"
    )
    assert options.servers == "nats://127.0.0.1:4223,nats://127.0.0.2:4223"
    assert (options.cluster_id, options.client_id, options.ack_wait) == ("c1", "svc-1", 5)
    assert options.delayed_nack is True
    assert options.ack_timeout == 2.5
    assert StanOptions.from_url("stan://h:1/c2").cluster_id == "c2"
    assert StanOptions.from_url("stan+tls://h:1?cluster_id=c").servers == "tls://h:1"
    assert StanOptions.from_url("stan://h:1?cluster_id=c", ack_wait=9).ack_wait == 9
    monitored = StanOptions.from_url("stan://h:1?cluster_id=c&monitor_url=http://h:8222")
    assert monitored.monitor_url == "http://h:8222"
    driver = hexa_event.connect("stan://127.0.0.1:4223?cluster_id=c").driver
    assert isinstance(driver, StanDriver)
    assert driver.features.patterns is False
    assert driver.features.ordered_per_key is False


def test_client_ids_are_unique_by_default() -> None:
    first = StanOptions(cluster_id="c").client_id
    assert first != StanOptions(cluster_id="c").client_id
    assert StanOptions(cluster_id="c", client_id=first).client_id == first


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("stan://h:1", {}, "cluster id"),
        ("stan://h:1?cluster_id=c&client_id=bad%20id", {}, "client_id"),
        ("stan://h:1?cluster_id=c&nope=1", {}, "unknown STAN URL option .nope.; known: ack_"),
        ("stan://h:1?cluster_id=c", {"ack_wait": 0}, "ack_wait"),
        ("stan://h:1?cluster_id=c&delayed_nack=maybe", {}, "boolean"),
        ("stan://h:1?cluster_id=c", {"nats_options": {"servers": ["x"]}}, "servers"),
        ("stan://h:1?cluster_id=c", {"colour": "red"}, "unknown STAN option"),
        ("stan://?cluster_id=c", {}, "needs a host"),
        ("stan://h:1?cluster_id=c&monitor_url=h:8222", {}, "monitoring address"),
    ],
)
def test_bad_options_name_the_fix(url: str, options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        StanOptions.from_url(url, **options)


def test_secrets_never_shown() -> None:
    options = StanOptions.from_url(
        "stan://alice:s3cret@h:1?cluster_id=c",
        token="tok-123",
        nats_options={"nkeys_seed": "S"},
        monitor_url="http://ops:m0nitor@h:8222",
    )
    assert options.user == "alice"
    assert options.password == "s3cret"
    shown = repr(options) + str(options) + repr(StanDriver(options))
    for secret in ("s3cret", "tok-123", "'S'", "m0nitor"):
        assert secret not in shown
    assert options.connect_kwargs()["password"] == "s3cret"


def test_channel_names() -> None:
    assert check_channel("orders.retry.1") == "orders.retry.1"
    for bad in ("", "a b", "a.*", "a.>", "a..b", "a/b", ".a"):
        with pytest.raises(ConfigurationError):
            check_channel(bad)


def test_subscription_options() -> None:
    with pytest.raises(ConfigurationError, match=":"):
        StanSubscriptionOptions(durable_name="a:b")
    with pytest.raises(ConfigurationError, match="at most one"):
        StanSubscriptionOptions(start="first", start_sequence=3)
    with pytest.raises(ConfigurationError, match="kind"):
        StanSubscriptionOptions(kind="exclusive")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        StanSubscriptionOptions(ack_wait=0)


async def test_subscription_requests_follow_the_spec() -> None:
    driver = StanDriver(StanOptions(cluster_id="c", max_inflight=None, ack_wait=7))

    class FakeNats:
        def new_inbox(self) -> str:
            return "_INBOX.x"

    driver.session.nc = FakeNats()  # type: ignore[assignment]
    spec = SubscriptionSpec(group="billing", channels=("orders", "billing.retry.1"), prefetch=50)
    sub = StanSubscription(driver.session, spec)
    first = sub.members[0].request
    assert (first.q_group, first.durable_name) == ("billing", "billing")
    assert (first.max_in_flight, first.ack_wait_in_secs) == (50, 7)
    assert first.start_position == StartPosition.FIRST
    plain = StanSubscription(
        driver.session,
        SubscriptionSpec(
            group="g",
            channels=("orders",),
            start="latest",
            options=StanSubscriptionOptions(kind="plain", start_time_delta=1.5, max_inflight=3),
        ),
    ).members[0]
    assert (plain.request.q_group, plain.request.durable_name) == ("", "")
    assert plain.request.start_position == StartPosition.TIME_DELTA_START
    assert plain.request.start_time_delta == 1_500_000_000
    assert plain.request.max_in_flight == 3
    with pytest.raises(ConfigurationError, match="pattern"):
        StanSubscription(driver.session, SubscriptionSpec(group="g", pattern="a.*"))
    with pytest.raises(ConfigurationError, match="':'"):
        StanSubscription(driver.session, SubscriptionSpec(group="a:b", channels=("x",)))


async def test_subscription_options_of_another_driver_are_refused_before_connecting() -> None:
    """Options that are not StanSubscriptionOptions are a ConfigurationError naming the class,
    before the driver tries to reach a server (nothing listens on port 1)."""
    driver = StanDriver(StanOptions(cluster_id="c", servers="nats://127.0.0.1:1"))
    spec = SubscriptionSpec(group="g", channels=("orders",), options=object())
    with pytest.raises(ConfigurationError, match="StanSubscriptionOptions"):
        await driver.subscribe(spec)
    await driver.close()


async def test_no_server_fails_fast_and_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before connecting: nothing listens
    driver = StanDriver.from_url(f"stan://127.0.0.1:{port}?cluster_id=c")
    began = time.monotonic()
    with pytest.raises(DriverError, match="cannot reach the NATS Streaming server"):
        await driver.connect()
    assert time.monotonic() - began < 15
    await driver.close()
