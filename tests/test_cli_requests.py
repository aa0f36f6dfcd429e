"""``hexa-event request`` prints the reply; ``publish --delay/--deliver-at`` schedules."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

import hexa_event as he
from cli_helpers import cli
from hexa_event.testing import Collector


@pytest.fixture
def url() -> str:
    return f"memory://cli-requests-{uuid.uuid4().hex}"


async def test_request_prints_the_reply(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    conn = he.connect(url)
    replier = conn.emitter()
    receiver = conn.receiver("svc")

    @receiver.subscribe("prices", action="quote")
    async def quote(ctx: he.Context, msg: he.Message[Any]) -> None:
        await replier.reply(ctx, msg, {"sku": msg.payload["sku"], "price": 12.5})

    async with receiver:
        args = ("request", url, "prices", "--key", "s-1", "--data", '{"sku": "s-1"}')
        assert await cli(*args, "--correlation-id", "corr-7") == 0
        assert json.loads(capsys.readouterr().out) == {"sku": "s-1", "price": 12.5}
        assert await cli(*args, "--json") == 0
        out = json.loads(capsys.readouterr().out)
        assert out["payload"] == {"sku": "s-1", "price": 12.5}
        assert out["channel"].startswith("_reply.")
        assert (
            await cli("request", url, "nobody", "--key", "k", "--data", "{}", "--timeout", "0.2")
            == 1
        )
        err = capsys.readouterr().err
        assert "no reply within 0.2s" in err
        assert "'nobody'" in err
    await conn.close()


async def test_publish_with_delay_and_deliver_at(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got = Collector()
    handled: dict[str, float] = {}
    conn = he.connect(url)
    receiver = conn.receiver("svc")

    def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        handled[msg.id] = time.time()
        got.add(msg)

    receiver.subscribe("reminders", action="remind", handler=handle)
    async with receiver:
        sent = time.time()
        assert (
            await cli(
                "publish",
                url,
                "reminders",
                "--key",
                "u1",
                "--data",
                "{}",
                "--delay",
                "0.6",
                "--json",
            )
            == 0
        )
        delayed = json.loads(capsys.readouterr().out)["id"]
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sent + 2)) + "Z"
        assert (
            await cli(
                "publish", url, "reminders", "--key", "u2", "--data", "{}", "--deliver-at", at
            )
            == 0
        )
        assert "deliver at " in capsys.readouterr().out
        await got.wait_for(2, within=10)
        assert handled[delayed] >= sent + 0.6
        assert max(handled.values()) >= int(sent + 2)
    await conn.close()


@pytest.mark.parametrize(
    ("option", "fix"),
    [
        (("--deliver-at", "2030-01-01T09:00:00"), "time zone"),
        (("--deliver-at", "tomorrow"), "ISO-8601"),
        (("--delay", "nan"), "finite"),
        (("--delay", "-3"), "from 0"),
    ],
)
async def test_bad_schedules_exit_2_naming_the_fix(
    url: str, option: tuple[str, str], fix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("publish", url, "c", "--key", "k", "--data", "{}", *option) == 2
    err = capsys.readouterr().err
    assert fix in err
    assert option[0] in err
