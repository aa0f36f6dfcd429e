"""Operations on a real Kafka: spans across the broker, metrics, and the operator commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import hexa_event as he
from hexa_event.cli import build_parser, main
from hexa_event.commands import invoke
from hexa_event.testing import Collector, eventually
from otel_helpers import Otel, make_otel, traced_round_trip


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


async def cli(*argv: str) -> int:
    return await invoke(build_parser().parse_args(list(argv)))


async def test_spans_and_metrics_across_a_kafka_round_trip(
    otel: Otel, kafka_bootstrap: str
) -> None:
    await traced_round_trip(otel, f"kafka://{kafka_bootstrap}")


async def test_publish_tail_and_dlq_commands_on_kafka(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"kafka://{kafka_bootstrap}"
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


def test_doctor_on_kafka(kafka_bootstrap: str, capsys: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    code = main(["doctor", f"kafka://{kafka_bootstrap}", "--channel", f"dr-{suffix}", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    names = {c["name"]: c for c in report["checks"]}
    assert names["kafka metadata"]["status"] == "ok"
    assert "will be created" in names[f"topic dr-{suffix}"]["detail"]
