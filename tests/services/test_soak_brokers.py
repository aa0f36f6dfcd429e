"""The soak's own brokers (``kafka-soak``, ``nats-soak``): on demand, on ports and in
directories no other service uses, and what ``make soak`` points the runner at. No service
is started here."""

from __future__ import annotations

from pathlib import Path

import pytest
import soak_runner

from hexa_event_services import SERVICE_NAMES, get_service
from hexa_event_services.definitions.soak import KafkaSoak, NatsSoak
from hexa_event_services.registry import ALL_NAMES, names_of

SOAK = ("kafka-soak", "nats-soak")


@pytest.fixture(autouse=True)
def _default_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HEXA_KAFKA_SOAK_BOOTSTRAP", "HEXA_NATS_SOAK_URL"):
        monkeypatch.delenv(var, raising=False)


def test_the_soak_brokers_are_on_demand_only() -> None:
    assert set(SOAK) <= set(ALL_NAMES)
    assert not set(SOAK) & set(SERVICE_NAMES)
    assert not set(SOAK) & set(names_of([]))  # `up` without names leaves them alone
    assert names_of(list(SOAK)) == list(SOAK)


def test_the_soak_brokers_share_no_port_or_directory() -> None:
    soak = [get_service(n) for n in SOAK]
    others = [get_service(n) for n in ALL_NAMES if n not in SOAK]
    taken = {p for s in others for p in s.ports}
    for svc in soak:
        assert svc.host == "127.0.0.1"
        assert not set(svc.ports) & taken, svc.name
        assert svc.run_dir.name == svc.name
        assert svc.data_dir not in {o.data_dir for o in others}
    assert not set(soak[0].ports) & set(soak[1].ports)
    assert get_service("kafka-soak").ports == [19592, 19593]
    assert get_service("nats-soak").ports == [14226, 18226]


def test_nats_soak_runs_jetstream(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEXA_EVENT_CACHE", str(tmp_path))  # its config goes there
    svc = NatsSoak()
    svc.run_dir.mkdir(parents=True)
    argv, _, _, _ = svc._command()
    conf = svc.run_dir / "nats.conf"
    assert argv[-2:] == ["-c", str(conf)]
    text = conf.read_text()
    assert "listen: 127.0.0.1:14226" in text
    assert "jetstream {" in text
    assert str(svc.data_dir) in text


def test_kafka_soak_is_its_own_single_node() -> None:
    props = KafkaSoak().properties()
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19592,CONTROLLER://127.0.0.1:19593"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19593"
    assert props["log.dirs"].endswith("kafka-soak/data/kafka-logs")


def test_the_runner_uses_the_soak_brokers_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    assert soak_runner.broker_endpoints("dedicated", None, None) == (
        "127.0.0.1:19592",
        "nats://127.0.0.1:14226",
    )
    monkeypatch.setenv("HEXA_KAFKA_SOAK_BOOTSTRAP", "127.0.0.1:29592")
    monkeypatch.setenv("HEXA_NATS_SOAK_URL", "nats://127.0.0.1:24226")
    assert soak_runner.broker_endpoints("dedicated", None, None) == (
        "127.0.0.1:29592",
        "nats://127.0.0.1:24226",
    )
    assert soak_runner.broker_endpoints("shared", None, None) == (
        get_service("kafka").url,
        get_service("nats").url,
    )
    assert soak_runner.broker_endpoints("dedicated", "h:1", "nats://h:2") == ("h:1", "nats://h:2")
