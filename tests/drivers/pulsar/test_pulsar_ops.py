"""Operations on a real Pulsar: spans across the broker, metrics, and the operator commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

import hexa_event as he
from hexa_event.cli import build_parser
from hexa_event.commands import invoke
from hexa_event.testing import Collector, eventually
from otel_helpers import Otel, make_otel, traced_round_trip

pytestmark = pytest.mark.pulsar


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


async def cli(*argv: str) -> int:
    return await invoke(build_parser().parse_args(list(argv)))


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
    suffix = uuid.uuid4().hex[:8]
    channel, action = f"ops-{suffix}", f"ops-charge-{suffix}"
    assert await cli("publish", url, channel, "--key", "k", "--data", '{"n": 1}') == 0
    capsys.readouterr()
    assert await cli("tail", url, channel, "--from-beginning", "-n", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["body"] == {"n": 1}

    conn = he.connect(url)
    receiver = conn.receiver("svc")
    receiver.subscribe(
        channel,
        action=action,
        retry=he.NO_RETRIES,
        handler=lambda c, m: (_ for _ in ()).throw(TimeoutError("down")),
    )
    async with receiver:
        info = receiver.subscriptions[action]
        await eventually(lambda: info.counters.dead_lettered == 1, within=60)
    await conn.close()

    args = ("--action", action, "--idle", "5")
    assert await cli("dlq", "list", url, *args, "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["reason"] for row in listed] == ["retries-exhausted"]
    got = Collector()
    audit = he.connect(url)
    reader = audit.receiver("audit")
    reader.subscribe(channel, action=f"audit-{suffix}", handler=got.add_message)
    async with reader:
        assert await cli("dlq", "replay", url, *args) == 0
        assert "replayed 1 dead letters" in capsys.readouterr().out
        await got.wait_for(2, within=60)  # the original and the replayed copy
    await audit.close()


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
