"""Operations on a real Pulsar: spans across the broker, metrics, and the operator commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

import hexa_event as he
from cli_helpers import cli, doctor_on_a_waiting_group, publish_tail_and_dlq_round_trip
from otel_helpers import Otel, make_otel, traced_round_trip

pytestmark = pytest.mark.pulsar


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


def url_of(pulsar_url: str, admin_url: str) -> str:
    return f"{pulsar_url}?admin_url={admin_url}"


async def test_spans_and_metrics_across_a_pulsar_round_trip(
    otel: Otel, pulsar_url: str, admin_url: str
) -> None:
    await traced_round_trip(otel, url_of(pulsar_url, admin_url))


async def test_publish_tail_and_dlq_commands_on_pulsar(
    pulsar_url: str, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_of(pulsar_url, admin_url)
    await publish_tail_and_dlq_round_trip(url, capsys)


async def test_doctor_on_pulsar(
    pulsar_url: str, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_of(pulsar_url, admin_url)
    suffix = uuid.uuid4().hex[:8]
    channel, action = f"dr-{suffix}", f"dr-act-{suffix}"
    conn = he.connect(url)
    await conn.provision([channel])
    await conn.close()
    args = ("--channel", channel, "--channel", f"dr-new-{suffix}", "--action", action, "--json")
    assert await cli("doctor", url, *args) == 0
    names = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert names["pulsar admin API"]["status"] == "ok"
    assert names[f"topic {channel}"]["detail"] == "non-partitioned"
    assert "will be created" in names[f"topic dr-new-{suffix}"]["detail"]
    assert names[f"subscription {action}"]["detail"].startswith("new")

    strict = f"{url}&provision=false"
    assert await cli("doctor", strict, "--channel", f"dr-new-{suffix}") == 5
    assert "provisioning is off" in capsys.readouterr().out
    wrong = f"{pulsar_url}?admin_url={admin_url}&namespace=nowhere-{suffix}"
    assert await cli("doctor", wrong) == 5
    assert "namespace" in capsys.readouterr().out


async def test_doctor_says_who_consumes_a_pulsar_subscription(
    pulsar_url: str, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subscription's finding names its topics, live consumers and backlog; a backlog with
    no consumer is a warning. It said only where the subscription exists."""
    url = url_of(pulsar_url, admin_url)
    channel, live, gone = await doctor_on_a_waiting_group(url, capsys, "subscription")
    assert live["status"] == "ok", live
    assert live["detail"] == f"exists on {channel}; 1 live member(s); lag {channel} 3"
    assert gone["status"] == "warn", gone
    assert gone["detail"] == (
        f"exists on {channel}; 0 live member(s); lag {channel} 3: nothing consumes it"
    )
    assert gone["fix"].startswith("start a receiver for this action")
