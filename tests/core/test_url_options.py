"""Strict URL query options on every engine: one typed parser (drivers/kit/query.py).

Pure parsing: ``connect`` refuses a bad URL before anything is built, so no broker is
needed. Each engine refuses a typo naming the known options and a boolean that is not
true/false/1/0/yes/no.
"""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import pytest

import hexa_event as he
from hexa_event.drivers.kafka import KafkaOptions, KafkaSubscriptionOptions
from hexa_event.drivers.kit.options import DriverOptions, Redacted
from hexa_event.drivers.kit.query import coerce
from hexa_event.drivers.memory.options import MemoryOptions
from hexa_event.drivers.nats import NatsOptions, NatsSubscriptionOptions
from hexa_event.drivers.pulsar import PulsarOptions, PulsarSubscriptionOptions
from hexa_event.drivers.sql import SqlOptions
from hexa_event.drivers.stan import StanOptions, StanSubscriptionOptions
from hexa_event.errors import ConfigurationError

PG = "postgresql://app@127.0.0.1:5432/db"
STAN = "stan://127.0.0.1:4223?cluster_id=test-cluster"

TYPOS = [
    ("memory://?partitons=2", "partitons", "partitions"),
    ("sqlite:///x.db?table_prefx=a_", "table_prefx", "table_prefix"),
    (f"{PG}?lease_tll=30", "lease_tll", "lease_ttl"),
    ("kafka://127.0.0.1:9092?provison=false", "provison", "provision"),
    ("pulsar://127.0.0.1:6650?provison=false", "provison", "provision"),
    ("nats://127.0.0.1:4222?provison=false", "provison", "provision"),
    (f"{STAN}&ack_wiat=3", "ack_wiat", "ack_wait"),
]


@pytest.mark.parametrize(("url", "typo", "meant"), TYPOS)
def test_a_typo_in_the_query_is_refused_naming_the_known_options(
    url: str, typo: str, meant: str
) -> None:
    with pytest.raises(ConfigurationError, match=rf"unknown \w+ URL option '{typo}'") as caught:
        he.connect(url)
    assert "known: " in str(caught.value)
    assert meant in str(caught.value).split("known: ", 1)[1]


BAD_BOOLEANS = [
    ("sqlite:///x.db?create_tables=tru", "create_tables"),
    (f"{PG}?notify=tru", "notify"),
    ("kafka://127.0.0.1:9092?provision=tru", "provision"),
    ("pulsar://127.0.0.1:6650?provision=tru", "provision"),
    ("nats://127.0.0.1:4222?provision=on", "provision"),
    (f"{STAN}&delayed_nack=tru", "delayed_nack"),
]


@pytest.mark.parametrize(("url", "option"), BAD_BOOLEANS)
def test_a_bad_boolean_is_refused_naming_the_accepted_values(url: str, option: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{option}='\w+' is not a boolean") as caught:
        he.connect(url)
    assert "true, false, 1, 0, yes, no" in str(caught.value)


def test_memory_refuses_a_number_that_is_not_one() -> None:
    with pytest.raises(ConfigurationError, match="partitions='four' must be an integer"):
        he.connect("memory://?partitions=four")
    with pytest.raises(ConfigurationError, match="unknown memory option"):
        he.connect("memory://", partitons=2)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nats://127.0.0.1:4222?max_age=nan", "max_age='nan' must be a finite number"),
        ("kafka://127.0.0.1:9092?delivery_timeout=inf", "delivery_timeout='inf' must be a finite"),
        ("pulsar://127.0.0.1:6650?partitions=1.5", "partitions='1.5' must be an integer"),
        ("pulsar://127.0.0.1:6650?body=gob", "body='gob' must be one of native, go"),
        (f"{PG}?lease_ttl=-1", "SqlOptions.lease_ttl"),
    ],
)
def test_numbers_and_choices_are_checked(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        he.connect(url)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("false", False),
        ("0", False),
        ("No", False),
    ],
)
def test_booleans_take_exactly_six_words(raw: str, value: bool) -> None:
    assert coerce("test", "flag", raw, bool) is value


def test_sql_options_come_from_the_query_and_never_reach_the_database_driver() -> None:
    options = SqlOptions(url=f"{PG}?sslmode=disable&lease_ttl=30&heartbeat_interval=2")
    assert (options.lease_ttl, options.heartbeat_interval) == (30.0, 2.0)
    assert options.url == f"{PG}?sslmode=disable"  # the database driver's parameter stays
    multihost = "postgresql://app@/db?host=h1:5432&host=h2:5432&target_session_attrs=primary"
    assert SqlOptions(url=multihost).url == multihost  # byte for byte, repeats kept
    sqlite = SqlOptions(url="sqlite:///x.db?notify=false&busy_timeout=5&timeout=3")
    assert (sqlite.notify, sqlite.busy_timeout, sqlite.url) == (
        False,
        5.0,
        "sqlite:///x.db?timeout=3",
    )
    both = SqlOptions(url=f"{PG}?lease_ttl=30", lease_ttl=20.0)  # the keyword wins
    assert (both.lease_ttl, both.url) == (20.0, PG)


def test_sqlite_driver_takes_its_options_from_the_url() -> None:
    driver = he.connect("sqlite:///kit.db?lease_ttl=30&table_prefix=a_").driver
    assert driver.options.lease_ttl == 30.0  # type: ignore[attr-defined]
    assert driver.options.table_prefix == "a_"  # type: ignore[attr-defined]
    assert driver.options.url == "sqlite:///kit.db"  # type: ignore[attr-defined]


def test_client_settings_still_pass_through_typed() -> None:
    kafka = KafkaOptions.from_url("kafka://h:9092?linger.ms=3&acks=all&partitions=6")
    assert kafka.partitions == 6
    assert kafka.client_config == {"linger.ms": "3", "acks": "all"}
    pulsar = PulsarOptions.from_url("pulsar://h:6650?io_threads=2&provision=false")
    assert (pulsar.provision, pulsar.client_config) == (False, {"io_threads": 2})
    nats = NatsOptions.from_url("nats://h:4222,h2:4222?stream=ORDERS&max_age=6000")
    assert (nats.stream, nats.max_age, nats.servers) == (
        "ORDERS",
        6000.0,
        ("nats://h:4222", "nats://h2:4222"),
    )
    stan = StanOptions.from_url(f"{STAN}&delayed_nack=yes&max_inflight=5")
    assert (stan.delayed_nack, stan.max_inflight) == (True, 5)


def test_keyword_options_win_over_the_query() -> None:
    assert KafkaOptions.from_url("kafka://h:9092?partitions=6", partitions=2).partitions == 2
    assert NatsOptions.from_url("nats://h:4222?stream=A", stream="B").stream == "B"


CONFLICTS = [
    pytest.param(MemoryOptions, "memory://?partitions=6", "partitions", id="memory"),
    pytest.param(KafkaOptions, "kafka://h:9092?partitions=6", "partitions", id="kafka"),
    pytest.param(PulsarOptions, "pulsar://h:6650?partitions=6", "partitions", id="pulsar"),
    pytest.param(NatsOptions, "nats://h:4222?partitions=6", "partitions", id="nats"),
    pytest.param(StanOptions, f"{STAN}&max_inflight=6", "max_inflight", id="stan"),
    pytest.param(SqlOptions, "sqlite:///x.db?partitions=6", "partitions", id="sqlite"),
    pytest.param(SqlOptions, f"{PG}?partitions=6", "partitions", id="postgresql"),
]


@pytest.mark.parametrize(("options_type", "url", "name"), CONFLICTS)
def test_a_keyword_wins_over_the_same_option_in_the_query_on_every_engine(
    options_type: type[DriverOptions], url: str, name: str
) -> None:
    """One rule for an option given twice (docs/driver-contract.md, "Shared plumbing"): the
    keyword wins, whatever its value: another one, the field's default, the query's own.
    SQL refused a keyword other than the query's ("give it once") and dropped one given at
    the field's default for the query's."""
    default = next(f.default for f in fields(options_type) if f.name == name)
    assert getattr(options_type.from_url(url), name) == 6  # the query alone
    for keyword in (8, default, 6):
        if keyword is None:
            continue
        options = options_type.from_url(url, **{name: keyword})
        assert getattr(options, name) == keyword, (keyword, options)


@pytest.mark.parametrize(("options_type", "url", "name"), CONFLICTS)
def test_a_keyword_overriding_the_query_is_logged_naming_both_values(
    options_type: type[DriverOptions], url: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Tools given the URL alone (hexa-event tail, doctor) read what the URL says: a keyword
    # that overrides it (another schema, table prefix, stream...) went unsaid.
    with caplog.at_level(logging.WARNING, logger="hexa_event.drivers.kit.options"):
        options_type.from_url(url, **{name: 6})  # the same value: nothing to say
        assert not caplog.records
        options_type.from_url(url, **{name: 8})
    assert f"{name}=8 given as a keyword overrides {name}=6 in the URL" in caplog.text


def test_a_secret_overriding_the_query_is_logged_without_either_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "kafka://h:9092?sasl_password=from-the-url&sasl_username=u&sasl_mechanism=PLAIN"
    with caplog.at_level(logging.WARNING, logger="hexa_event.drivers.kit.options"):
        KafkaOptions.from_url(url, sasl_password="from-the-code")
    assert "sasl_password=*** given as a keyword overrides sasl_password=***" in caplog.text
    assert "from-the" not in caplog.text


@pytest.mark.parametrize("base", ["sqlite:///kit.db", PG])
def test_sql_takes_a_keyword_over_the_query_through_connect_and_its_constructor(
    base: str,
) -> None:
    for keyword in (8, 16):  # 16: the field's default
        driver = he.connect(f"{base}?partitions=4", partitions=keyword).driver
        assert driver.options.partitions == keyword  # type: ignore[attr-defined]
    options = SqlOptions(url=f"{base}?partitions=4&lease_ttl=30", partitions=8)
    assert (options.partitions, options.lease_ttl, options.url) == (8, 30.0, base)


@pytest.mark.parametrize(
    ("url", "typo"),
    [
        ("sqlite:///x.db?table_prefx=a_", "table_prefx"),
        ("sqlite:///x.db?table_prefix=a_", "table_prefix"),
        (f"{PG}?sslmod=require", "sslmod"),
    ],
)
def test_outbox_relay_cleaner_and_inbox_urls_refuse_options_the_database_does_not_take(
    url: str, typo: str, tmp_path: Path
) -> None:
    """The outbox relay, the cleaners and the inbox build their engine from a URL too: a typo
    used to reach the database driver (ignored with a warning on SQLite)."""
    from hexa_event.inbox import InboxCleaner
    from hexa_event.outbox import OutboxCleaner, OutboxRelay

    builders = [
        lambda: OutboxRelay(url, he.connect(f"sqlite:///{tmp_path}/target.db").driver),
        lambda: OutboxCleaner(url),
        lambda: InboxCleaner(url),
    ]
    for build in builders:
        with pytest.raises(
            ConfigurationError, match=rf"unknown database URL option\(s\) \['{typo}'\]"
        ):
            build()


def test_database_parameters_still_pass_and_secrets_in_the_query_stay_hidden() -> None:
    from hexa_event.outbox import OutboxCleaner

    cleaner = OutboxCleaner(f"{PG}?sslmode=disable&application_name=relay")
    assert cleaner.engine.url.query["sslmode"] == "disable"
    with pytest.raises(ConfigurationError) as caught:
        OutboxCleaner(f"{PG}?password=s3cret-value&sslpasword=other-s3cret")
    assert "s3cret" not in str(caught.value)


def test_a_parsed_database_url_hides_query_secrets_too() -> None:
    from hexa_event._sql.urls import async_url, redact

    shown = redact(
        async_url(f"{PG}?password=s3cret-value&sslpassword=other-s3cret&sslmode=require")
    )
    assert "s3cret" not in shown
    assert "sslmode=require" in shown


def test_one_rule_keywords_then_the_query_then_the_rest_of_the_url() -> None:
    """Every engine reads a URL through the kit's DriverOptions.from_url: a keyword wins over
    the query, the query over what the user info, hosts or path give."""
    assert StanOptions.from_url("stan://h:1/from_path?cluster_id=from_query").cluster_id == (
        "from_query"
    )
    assert StanOptions.from_url("stan://h:1/p", cluster_id="kw").cluster_id == "kw"
    nats = NatsOptions.from_url("nats://u:pw@h:1?user=q", user="kw")
    assert (nats.user, nats.password) == ("kw", "pw")
    assert NatsOptions.from_url("nats://u:pw@h:1?user=q").user == "q"
    pulsar = PulsarOptions.from_url("pulsar://t0k@h:6650?admin_url=http://a:1")
    assert (pulsar.token, pulsar.admin_url) == ("t0k", "http://a:1")
    assert PulsarOptions.from_url("pulsar://h:6650").admin_url == "http://h:8080"
    kafka = KafkaOptions.from_url("kafka://u:pw@h:9092?sasl.mechanism=SCRAM-SHA-512")
    assert (kafka.sasl_username, kafka.sasl_mechanism, kafka.client_config) == (
        "u",
        "SCRAM-SHA-512",
        {},
    )
    assert SqlOptions.from_url("sqlite:///x.db?lease_ttl=30").lease_ttl == 30.0
    with pytest.raises(ConfigurationError, match=r"unknown SQL driver option\(s\) \['lease'\]"):
        SqlOptions.from_url("sqlite:///x.db", lease=30)


@pytest.mark.parametrize(
    "options",
    [
        KafkaOptions(sasl_password="s3cret-1", client_config={"sasl.password": "s3cret-2"}),
        KafkaSubscriptionOptions(consumer_config={"sasl.password": "s3cret-1"}),
        NatsOptions(servers=("nats://u:s3cret-1@h:1",), token="s3cret-2"),
        NatsSubscriptionOptions(consumer_config={"token": "s3cret-1"}),
        PulsarOptions(token="s3cret-1", admin_url="http://u:s3cret-2@h:8080"),
        PulsarSubscriptionOptions(consumer_config={"auth_params": "s3cret-1"}),
        StanOptions(cluster_id="c", password="s3cret-1", monitor_url="http://u:s3cret-2@h:1"),
        StanSubscriptionOptions(durable_name="d"),
        SqlOptions(url="postgresql://u:s3cret-1@h/db", engine_options={"password": "s3cret-2"}),
        MemoryOptions(partitions=2),
    ],
    ids=lambda options: type(options).__name__,
)
def test_every_options_class_shows_no_secret(options: object) -> None:
    """Every options class comes from the kit (DriverOptions or Redacted): its repr and str
    name the class and never a secret."""
    assert isinstance(options, Redacted)
    for shown in (repr(options), str(options)):
        assert shown.startswith(type(options).__name__ + "(")
        assert "s3cret" not in shown
