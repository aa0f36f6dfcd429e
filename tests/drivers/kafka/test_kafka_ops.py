"""Operations on a real Kafka: spans across the broker, metrics, and the operator commands."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import hexa_event as he
from cli_helpers import cli, doctor_on_a_waiting_group, publish_tail_and_dlq_round_trip
from hexa_event.cli import main
from hexa_event.drivers.kafka import KafkaSubscriptionOptions
from hexa_event.testing.waiting import Collector
from otel_helpers import Otel, make_otel, traced_round_trip


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = make_otel()
    yield made
    made.meters.shutdown()


async def test_spans_and_metrics_across_a_kafka_round_trip(
    otel: Otel, kafka_bootstrap: str
) -> None:
    await traced_round_trip(otel, f"kafka://{kafka_bootstrap}")


async def test_publish_tail_and_dlq_commands_on_kafka(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"kafka://{kafka_bootstrap}"
    await publish_tail_and_dlq_round_trip(url, capsys)


def test_doctor_on_kafka(kafka_bootstrap: str, capsys: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    code = main(["doctor", f"kafka://{kafka_bootstrap}", "--channel", f"dr-{suffix}", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    names = {c["name"]: c for c in report["checks"]}
    assert names["kafka metadata"]["status"] == "ok"
    assert "will be created" in names[f"topic dr-{suffix}"]["detail"]


async def test_doctor_says_who_consumes_a_kafka_group(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A group's finding names its topics, members, state and lag; records waiting with no
    member is a warning. It said only that the group exists."""
    url = f"kafka://{kafka_bootstrap}"
    channel, live, gone = await doctor_on_a_waiting_group(url, capsys, "group", settle_one=True)
    assert live["status"] == "ok", live
    assert live["detail"].startswith(f"exists on {channel}; 1 live member(s); group ")
    assert live["detail"].endswith(f"; lag {channel} 3")
    assert gone["status"] == "warn", gone
    assert gone["detail"] == (
        f"exists on {channel}; 0 live member(s); group empty; lag {channel} 2: nothing consumes it"
    )
    assert gone["fix"] == "start a receiver for this action (hexa-event run, or receiver.start())"


async def test_doctor_checks_a_kafka_group_set_in_the_subscription_options(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A receiver whose group is ``KafkaSubscriptionOptions(group=...)``: ``doctor --group``
    finds its live member and lag (``--action`` alone names the action's group, which
    does not exist)."""
    suffix = uuid.uuid4().hex[:8]
    channel, action, group = f"dr-{suffix}", f"dr-act-{suffix}", f"dr-custom-{suffix}"
    conn = he.connect(f"kafka://{kafka_bootstrap}")
    receiver = conn.receiver("svc")
    handled = Collector()

    @receiver.subscribe(channel, action=action, options=KafkaSubscriptionOptions(group=group))
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        handled.add(msg.id)

    try:
        await conn.emitter().emit_many([he.Event(channel, f"k{n}", {"n": n}) for n in range(2)])
        async with receiver:
            await handled.wait_for(2, within=30)
            doctor = ("doctor", f"kafka://{kafka_bootstrap}", "--channel", channel, "--json")
            assert await cli(*doctor, "--action", action, "--group", group) == 0
            checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
            found = checks[f"group {group}"]
            assert found["status"] == "ok", found
            assert found["detail"].startswith(f"exists on {channel}; 1 live member(s); "), found
            assert checks[f"group {action}"]["detail"].startswith("new"), checks
    finally:
        await conn.close()
