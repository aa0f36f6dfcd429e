"""The kit's field checks every options class uses: a choice, a name, a count; each names
the owner and the field, and says what it got."""

from __future__ import annotations

import pytest

from hexa_event.drivers.kafka import KafkaSubscriptionOptions
from hexa_event.drivers.kit.options import check_choice, check_count, check_name
from hexa_event.drivers.memory.options import MemoryOptions
from hexa_event.drivers.nats import NatsOptions, NatsSubscriptionOptions
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions
from hexa_event.drivers.sql import SqlOptions
from hexa_event.errors import ConfigurationError


def test_a_choice() -> None:
    check_choice("O", "mode", "a", ("a", "b"))
    with pytest.raises(ConfigurationError, match=r"^O\.mode must be 'a' or 'b', got 'c'$"):
        check_choice("O", "mode", "c", ("a", "b"))
    with pytest.raises(ConfigurationError, match=r"one of 'a', 'b', 'c', got 'd' \(pick a\)$"):
        check_choice("O", "mode", "d", ("a", "b", "c"), " (pick a)")


def test_a_name() -> None:
    check_name("O", "group", "g")
    check_name("O", "group", None, optional=True)
    for bad in ("", None, 3):
        with pytest.raises(ConfigurationError, match=r"O\.group must be a non-empty string"):
            check_name("O", "group", bad)


def test_a_count() -> None:
    check_count("O", "n", 1)
    check_count("O", "n", -1, unlimited=-1)
    check_count("O", "n", 0, minimum=0, maximum=0)
    for bad in (0, True, 1.0, "1", None):
        with pytest.raises(ConfigurationError, match=r"^O\.n must be an integer from 1, got "):
            check_count("O", "n", bad)
    with pytest.raises(ConfigurationError, match=r"from 1 to 5 \(or -1: no limit\), got 6$"):
        check_count("O", "n", 6, maximum=5, unlimited=-1)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: MemoryOptions(partitions=True), "MemoryOptions.partitions"),
        (lambda: SqlOptions(url="sqlite:///x.db", partitions=0), "SqlOptions.partitions"),
        (lambda: SqlOptions(url="sqlite:///x.db", pool_size=0), "SqlOptions.pool_size"),
        (lambda: SqlOptions(url="sqlite:///x.db", sqlite_synchronous="ON"), "sqlite_synchronous"),
        (lambda: NatsOptions(replicas=6), "NatsOptions.replicas"),
        (lambda: NatsOptions(max_bytes=0), r"NatsOptions.max_bytes .* \(or -1: no limit\)"),
        (lambda: NatsSubscriptionOptions(batch=0), "NatsSubscriptionOptions.batch"),
        (lambda: PulsarOptions(max_in_flight=0), "PulsarOptions.max_in_flight"),
        (lambda: PulsarOptions(body="gob"), "PulsarOptions.body must be 'native' or 'go'"),
        (lambda: PulsarSubscriptionOptions(name=""), "PulsarSubscriptionOptions.name"),
        (lambda: KafkaSubscriptionOptions(buffer=0), "KafkaSubscriptionOptions.buffer"),
        (lambda: KafkaSubscriptionOptions(assignment="sticky"), "use 'range' to share a group"),
    ],
)
def test_the_drivers_options_check_through_the_kit(make: object, field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        make()  # type: ignore[operator]


def test_doctor_findings_on_channels_and_groups_read_alike() -> None:
    from hexa_event.driver import Finding
    from hexa_event.drivers.kit.findings import NEW_GROUP, channel_finding, group_finding

    create = "create topic t"
    assert channel_finding("topic t", 3, False, create) == Finding("topic t", "ok", "3 partitions")
    assert channel_finding("topic t", 0, False, create).detail == "non-partitioned"
    assert "will be created" in channel_finding("topic t", None, True, create).detail
    missing = channel_finding("topic t", None, False, create)
    assert (missing.status, missing.fix) == (
        "fail",
        "create topic t, or connect with provision=True",
    )
    assert group_finding("group g", None) == Finding("group g", "ok", NEW_GROUP)
    assert group_finding("group g", " on a, b").detail == "exists on a, b"
