"""Kafka options: validation, URL parsing, redaction (no broker needed)."""

from __future__ import annotations

import pytest

import hexa_event
from hexa_event.drivers.kafka import KafkaDriver, KafkaOptions, KafkaSubscriptionOptions
from hexa_event.drivers.kafka.partitioner import fnv1a_32, sarama_partition
from hexa_event.errors import ConfigurationError


def test_url_with_credentials_and_passthrough() -> None:
    options = KafkaOptions.from_url(
        "kafka://alice:s3cr%40t@b1:9092,b2:9092?ssl.ca.location=/ca.pem&linger.ms=1",
        partitions=6,
    )
    assert options.bootstrap_servers == "b1:9092,b2:9092"
    assert options.sasl_username == "alice"
    assert options.sasl_password == "s3cr@t"
    assert options.security_protocol == "SASL_PLAINTEXT"
    assert options.partitions == 6
    config = options.producer()
    assert config["sasl.password"] == "s3cr@t"
    assert config["ssl.ca.location"] == "/ca.pem"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["partitioner"] == "fnv1a_random"


def test_secrets_never_in_repr() -> None:
    options = KafkaOptions(
        sasl_username="alice",
        sasl_password="hunter2",
        ssl_key_password="keypw",
        client_config={"sasl.oauthbearer.client.secret": "oauthsecret", "linger.ms": 3},
    )
    driver = KafkaDriver(options)
    for text in (repr(options), str(options), repr(driver)):
        assert "hunter2" not in text
        assert "keypw" not in text
        assert "oauthsecret" not in text
        assert "alice" in text
    sub = KafkaSubscriptionOptions(consumer_config={"sasl.password": "pw2"})
    assert "pw2" not in repr(sub)


def test_connect_maps_kafka_scheme() -> None:
    connection = hexa_event.connect("kafka://127.0.0.1:9092", partitions=2)
    driver = connection.driver
    assert isinstance(driver, KafkaDriver)
    assert driver.options.partitions == 2
    assert driver.features.persistent
    assert not driver.features.delayed_publish
    assert not driver.features.delayed_nack


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partitions": 0},
        {"replication_factor": 0},
        {"delivery_timeout": 0},
        # Past what librdkafka takes (an OverflowError or ValueError at the first provision,
        # its refusal at the first publish, an OverflowError in a revoke), or a
        # delivery_timeout under 1 ms (librdkafka's 0: no timeout at all).
        {"partitions": 2**31},
        {"partitions": 100_001},
        {"replication_factor": 10_001},
        {"delivery_timeout": 0.0004},
        {"delivery_timeout": 3e6},
        {"metadata_timeout": 3e6},
        {"linger_ms": 1e6},
        {"revoke_timeout": 1e10},
        {"bootstrap_servers": ""},
        {"consumer_config": {"enable.auto.offset.store": True}},
        {"consumer_config": {"group.id": "x"}},
        {"producer_config": {"on_delivery": print}},
    ],
)
def test_bad_options_say_what_to_change(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        KafkaOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["9" * 400, "-" + "9" * 400, "9" * 5000])
def test_a_url_integer_of_hundreds_of_digits_is_refused(value: str) -> None:
    """A 400-digit ``?partitions=`` raised OverflowError (the URL's number turned into a
    float to be checked), not a ConfigurationError naming the option."""
    with pytest.raises(ConfigurationError, match="partitions"):
        KafkaOptions.from_url(f"kafka://h:1?partitions={value}")


def test_unknown_url_option() -> None:
    with pytest.raises(ConfigurationError, match="client_config"):
        KafkaOptions.from_url("kafka://h:1", lingerr=3)


def test_subscription_options_group_override_validation() -> None:
    with pytest.raises(ConfigurationError, match="group"):
        KafkaSubscriptionOptions(consumer_config={"group.id": "g"})
    assert KafkaSubscriptionOptions(group="g").group == "g"


def test_fnv1a_reference_values() -> None:
    # FNV-1a 32 reference vectors (from the FNV authors' test suite).
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    assert sarama_partition("a", 7) == 6  # from a real sarama v1.27.2 run


async def test_client_errors_never_show_credentials() -> None:
    """A bad SASL setting fails with librdkafka's reason, not the password."""
    from hexa_event.driver import RawRecord
    from hexa_event.errors import DriverError

    driver = KafkaDriver(
        bootstrap_servers="127.0.0.1:1",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="NOT-A-MECHANISM",
        sasl_username="alice",
        sasl_password="hunter2-secret",
    )
    driver.options.producer()  # builds without touching the network
    with pytest.raises(DriverError) as caught:
        await driver._producer.publish([RawRecord("t", "k", {}, b"x")])
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(driver)
    await driver.close()


@pytest.mark.parametrize("port", ["\u00b2", "\u0663\u0663", "9" * 5000, "99999"])
def test_a_port_that_is_not_a_small_ascii_number_is_refused(port: str) -> None:
    """'²' passes str.isdigit() and fails int(); 5,000 digits exceed int()'s limit: each
    raised ValueError instead of naming the option."""
    with pytest.raises(ConfigurationError, match="port"):
        KafkaOptions(bootstrap_servers=f"127.0.0.1:{port}")
