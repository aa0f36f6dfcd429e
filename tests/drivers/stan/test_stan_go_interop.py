"""Go hexa-event's hestan wire format (stan.go v0.7.0) <-> our STAN driver, on the real server.

The Go program (``go/main.go`` beside this file) is built once per session into the user
cache (``GOFLAGS=-mod=mod``; modules from the Go module proxy). Without Go or its modules
the tests skip with the reason, and fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from stan_helpers import unique

import hexa_event
from hexa_event.context import Context
from hexa_event.event import Event, Message
from hexa_event.testing.waiting import Collector

pytestmark = pytest.mark.stan

HERE = Path(__file__).parent / "go"
WITHIN = 60.0


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and the Go STAN interop program is unavailable: {reason}")
    pytest.skip(f"Go STAN interop program unavailable: {reason}")


@pytest.fixture(scope="session")
def go_program() -> Path:
    """Build ``go/main.go`` (cached outside the repo) and return the binary."""
    fallback = Path("/usr/local/go/bin/go")
    go = shutil.which("go") or (str(fallback) if fallback.exists() else None)
    if go is None:
        _unavailable("no `go` on PATH (install Go >= 1.22)")
    cache = Path(os.environ.get("HEXA_EVENT_CACHE", Path.home() / ".cache" / "hexa-event"))
    binary = cache / "interop-go" / "stan-interop"
    binary.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        cwd=HERE,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        _unavailable(f"`go build` failed: {result.stderr.strip()[-800:]}")
    return binary


def _go_args(stan_url: str) -> list[str]:
    """``-url`` and ``-cluster`` for the Go program from our ``stan://`` URL."""
    hostport, _, query = stan_url.removeprefix("stan://").partition("?")
    cluster = dict(p.split("=", 1) for p in query.split("&"))["cluster_id"]
    return ["-url", f"nats://{hostport}", "-cluster", cluster]


async def _go(binary: Path, stan_url: str, *args: str) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        *args,
        *_go_args(stan_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WITHIN + 30)
    assert proc.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]


async def test_go_emits_python_handles(go_program: Path, stan_url: str) -> None:
    connection = hexa_event.connect(stan_url)
    channel, action = unique("go2py"), unique("act")
    got = Collector()

    async def handle(ctx: Context, msg: Message[Any]) -> None:
        got.add((ctx, msg))

    receiver = connection.receiver("svc")
    receiver.subscribe(channel, action=action, handler=handle)
    try:
        await receiver.start()
        await _go(go_program, stan_url, "emit", "-channel", channel, "-n", "5")
        received = await got.wait_for(5, within=WITHIN)
        assert sorted(m.payload["i"] for _, m in received) == list(range(5))
        for ctx, msg in received:
            assert msg.payload["from"] == "go"
            assert ctx.correlation_id == "go-corr"
            assert ctx.locale == "fa-IR"
            assert msg.reply_channel == "go-replies"
            assert msg.attempt == 1
    finally:
        await receiver.close()
        await connection.close()


async def test_python_emits_go_receives(go_program: Path, stan_url: str) -> None:
    connection = hexa_event.connect(stan_url)
    channel = unique("py2go")
    try:
        ids = await connection.emitter().emit_many(
            (Event(channel, f"k{i}", {"i": i}, reply_channel="r") for i in range(5)),
            Context(correlation_id="py-corr", locale="en-GB"),
        )
    finally:
        await connection.close()
    lines = await _go(go_program, stan_url, "receive", "-channel", channel, "-n", "5")
    assert [json.loads(line["payload"]) for line in lines] == [{"i": i} for i in range(5)]
    for line, event_id in zip(lines, ids, strict=True):
        headers = line["headers"]
        assert headers["_ctx_correlation_id"] == "py-corr"
        assert headers["_ctx_locale"] == "en-GB"
        assert headers["_payload_encoder"] == "json"
        assert headers["_reply_channel"] == "r"
        assert headers["HEXA_EVENT_ID"] == event_id


async def test_go_and_python_members_share_one_durable_queue_group(
    go_program: Path, stan_url: str
) -> None:
    """hestan subscribed with Group and Durable set to the action joins our action's group:
    together the two members see each event once (two groups would see 2 x 40)."""
    channel, action = unique("shared"), unique("act")
    go_member = await asyncio.create_subprocess_exec(
        str(go_program),
        "receive",
        "-channel",
        channel,
        "-group",
        action,
        "-durable",
        action,
        "-for",
        "8",
        *_go_args(stan_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert go_member.stdout is not None
    ready = await asyncio.wait_for(go_member.stdout.readline(), WITHIN)
    assert ready.strip() == b"ready"
    connection = hexa_event.connect(stan_url, max_inflight=2)
    ours = Collector()

    async def slow(ctx: Context, msg: Message[Any]) -> None:
        await asyncio.sleep(0.01)  # keep both members busy
        ours.add(msg.payload["i"])

    receiver = connection.receiver("svc")
    receiver.subscribe(channel, action=action, handler=slow)
    try:
        await receiver.start()
        await connection.emitter().emit_many(Event(channel, f"k{i}", {"i": i}) for i in range(40))
        out, err = await asyncio.wait_for(go_member.communicate(), WITHIN)
        assert go_member.returncode == 0, err.decode()
        theirs = [json.loads(json.loads(line)["payload"])["i"] for line in out.splitlines()]
    finally:
        await receiver.close()
        await connection.close()
    assert theirs, "the Go member received nothing"
    assert ours.items, "our member received nothing"
    assert sorted(theirs + ours.items) == list(range(40))
