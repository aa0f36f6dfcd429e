"""``hexa-event tail`` on a channel that does not exist says so (exit 4, not found) and
creates nothing: a mistyped topic used to be created (Kafka, with the driver's partition
count; Pulsar too), leaving a junk topic behind every typo."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import hexa_event as he
from cli_helpers import channel_exists
from hexa_event.cli import main
from hexa_event_services import require_service

URLS = {"kafka": "kafka://127.0.0.1:9092", "pulsar": "pulsar://127.0.0.1:6650"}


@pytest.mark.parametrize("engine", [pytest.param(e, marks=getattr(pytest.mark, e)) for e in URLS])
def test_tail_of_a_missing_channel_is_not_found_and_creates_it_not(
    engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service(engine)
    url, channel = URLS[engine], f"tail-typo-{uuid.uuid4().hex[:8]}"
    assert main(["tail", url, channel, "--idle", "1"]) == 4  # docs/cli.md: not found
    err = capsys.readouterr().err
    assert f"channel {channel!r} does not exist (tail creates no channel)" in err
    assert not channel_exists(url, channel)


@pytest.mark.parametrize("engine", [pytest.param(e, marks=getattr(pytest.mark, e)) for e in URLS])
def test_tail_of_an_existing_channel_still_follows_it(
    engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service(engine)
    url, channel = URLS[engine], f"tail-there-{uuid.uuid4().hex[:8]}"

    async def emit() -> None:
        async with he.connect(url) as conn:
            await conn.emitter().emit(he.Event(channel, "k", {"n": 1}))

    asyncio.run(emit())
    assert main(["tail", url, channel, "--from-beginning", "-n", "1", "--idle", "30"]) == 0
    assert '"n": 1' in capsys.readouterr().out
