"""``hexa-event doctor`` against the real services: it never prints a secret of the URL
(text and ``--json``), and it fails, naming the problem, wherever the driver would refuse
the URL (it builds the driver and runs its own check, not a scheme switch of its own)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

import hexa_event as he
import hexa_event_services as services
from hexa_event.cli import main

SECRET = "s3cr3t-" + uuid.uuid4().hex[:12]


def _service(name: str) -> str:
    return str(services.require_service(name).url)


def _hostport(url: str) -> str:
    return url.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]


def _stan_cluster() -> str:
    return services.env("HEXA_STAN_CLUSTER_ID")


def _doctor(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["doctor", url, "--timeout", "3", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


SECRET_URLS = [
    pytest.param(
        "pulsar",
        lambda: f"pulsar://{SECRET}@{_hostport(_service('pulsar'))}",
        marks=pytest.mark.pulsar,
        id="pulsar-token-userinfo",
    ),
    pytest.param(
        "pulsar",
        lambda: f"{_service('pulsar')}?token={SECRET}",
        marks=pytest.mark.pulsar,
        id="pulsar-token-query",
    ),
    pytest.param(
        "nats",
        lambda: f"nats://{SECRET}@{_hostport(_service('nats'))}",
        marks=pytest.mark.nats,
        id="nats-token-userinfo",
    ),
    pytest.param(
        "nats",
        lambda: f"{_service('nats')}?user=app&password={SECRET}",
        marks=pytest.mark.nats,
        id="nats-password-query",
    ),
    pytest.param(
        "nats",
        lambda: f"{_service('nats')}?token={SECRET}",
        marks=pytest.mark.nats,
        id="nats-token-query",
    ),
    pytest.param(
        "stan",
        lambda: f"stan://app:{SECRET}@{_hostport(_service('stan'))}?cluster_id={_stan_cluster()}",
        marks=pytest.mark.stan,
        id="stan-password",
    ),
    pytest.param(
        "stan",
        lambda: f"stan://{SECRET}@{_hostport(_service('stan'))}?cluster_id={_stan_cluster()}",
        marks=pytest.mark.stan,
        id="stan-token",
    ),
    pytest.param(
        "kafka",
        lambda: f"kafka://{_service('kafka')}?sasl.password={SECRET}",
        marks=pytest.mark.kafka,
        id="kafka-sasl-password",
    ),
    pytest.param(
        "kafka",
        lambda: f"kafka://app:{SECRET}@{_service('kafka')}",
        marks=pytest.mark.kafka,
        id="kafka-userinfo",
    ),
]


@pytest.mark.parametrize(("engine", "make_url"), SECRET_URLS)
def test_doctor_never_prints_a_secret(
    engine: str, make_url: object, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_url()  # type: ignore[operator]
    _, text = _doctor(url, capsys)
    assert SECRET not in text
    assert "doctor: " in text
    assert f"({engine})" in text
    _, out = _doctor(url, capsys, "--json")
    assert SECRET not in out
    report = json.loads(out.splitlines()[0])
    assert SECRET not in json.dumps(report)
    assert "***" in report["url"]


def test_redact_covers_tokens_and_secret_options() -> None:
    from hexa_event.redaction import redact_url as redact
    from hexa_event.redaction import scrub
    from hexa_event.redaction import url_secrets as secrets_of

    assert redact(f"pulsar://{SECRET}@h:6650") == "pulsar://***@h:6650"
    assert redact(f"kafka://h:9092?sasl.password={SECRET}&acks=all") == (
        "kafka://h:9092?sasl.password=***&acks=all"
    )
    assert redact("postgresql://app@h/db") == "postgresql://app@h/db"  # a user, no secret
    assert redact("sqlite:////abs/events.db") == "sqlite:////abs/events.db"
    url = f"nats://u:{SECRET}@h:4222?token=t0k3n-value"
    assert scrub(f"failed: {url} said t0k3n-value", secrets_of(url)) == (
        "failed: nats://u:***@h:4222?token=*** said ***"
    )


def _refused(url: str, capsys: pytest.CaptureFixture[str], code: int, *words: str) -> None:
    got, text = _doctor(url, capsys)
    assert got == code, text
    assert "[FAIL] driver" in text, text
    assert "nothing to fix" not in text
    for word in words:
        assert word in text, text


@pytest.mark.stan
def test_doctor_refuses_what_the_stan_driver_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    host = _hostport(_service("stan"))
    _refused(f"stan://{host}?cluster_id=no-such-cluster", capsys, 3, "no-such-cluster")
    _refused(f"stan://{host}", capsys, 5, "cluster_id")
    _refused(f"stan://{host}?cluster_id={_stan_cluster()}&nonsense=1", capsys, 5, "nonsense")
    code, text = _doctor(f"stan://{host}?cluster_id={_stan_cluster()}", capsys)
    assert code == 0, text


@pytest.mark.nats
def test_doctor_refuses_what_the_nats_driver_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    url = _service("nats")
    suffix = uuid.uuid4().hex[:8]
    own = f"stream=DOCTOR_{suffix}&subject_prefix=doctor-{suffix}&max_age=900"
    asyncio.run(_provision(f"{url}?{own}"))  # an unpartitioned stream of this test's own
    try:
        _refused(f"{url}?{own}&partitions=4", capsys, 5, "unpartitioned", "partitions")
        code, text = _doctor(f"{url}?{own}", capsys)
        assert code == 0, text
    finally:
        asyncio.run(_delete_stream(url, f"DOCTOR_{suffix}"))
    _refused(f"{url}?partitions=abc", capsys, 5, "partitions")
    _refused(f"{url}?nonsense=1", capsys, 5, "nonsense")


async def _provision(url: str) -> None:
    conn = he.connect(url)
    await conn.provision(["orders"])
    await conn.close()


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


@pytest.mark.nats
@pytest.mark.stan
def test_doctor_fails_on_a_server_without_jetstream(capsys: pytest.CaptureFixture[str]) -> None:
    # The streaming server's embedded NATS server runs without JetStream.
    _refused(f"nats://{_hostport(_service('stan'))}", capsys, 3, "JetStream")


@pytest.mark.pulsar
@pytest.mark.kafka
def test_doctor_fails_on_a_pulsar_url_at_the_kafka_port(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _refused(f"pulsar://{_service('kafka')}", capsys, 3, "topic lookup")


@pytest.mark.kafka
def test_doctor_fails_on_options_librdkafka_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    _refused(f"kafka://{_service('kafka')}?no.such.property=1", capsys, 5, "no.such.property")


def test_doctor_fails_on_a_sqlite_file_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # /proc takes no new files, not even from root (whom mode bits would not stop).
    _refused("sqlite:////proc/hexa-event-doctor.db", capsys, 5, "cannot write")
    _refused(f"sqlite:///{tmp_path}/missing/dir/events.db", capsys, 5, "does not exist")
    code, text = _doctor(f"sqlite:///{tmp_path}/events.db", capsys)
    assert code == 0, text
    assert not (tmp_path / "events.db").exists()  # read-only: nothing created
    assert not list(tmp_path.iterdir())
