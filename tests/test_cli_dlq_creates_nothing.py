"""``hexa-event dlq list|show|replay|purge`` on an action without a dead-letter channel say
so (exit 4, not found) and create nothing: a mistyped action used to create
``<typo>.dlq`` on Kafka and Pulsar (and the replay group) and report "no pending dead
letters", leaving a junk topic behind. On an action whose receiver ran, they work as before,
and ``replay`` still creates a ``--to`` channel that does not exist yet."""

from __future__ import annotations

import asyncio
import uuid

import pytest

import hexa_event as he
from cli_helpers import channel_exists
from hexa_event.cli import main
from hexa_event.testing import Collector, eventually
from hexa_event_services import require_service

URLS = {"kafka": "kafka://127.0.0.1:9092", "pulsar": "pulsar://127.0.0.1:6650"}
ENGINES = [pytest.param(e, marks=getattr(pytest.mark, e)) for e in URLS]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("command", ["list", "show", "replay", "purge"])
def test_dlq_of_an_action_without_dead_letters_channel_is_not_found_and_creates_it_not(
    engine: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service(engine)
    url, action = URLS[engine], f"dlq-typo-{uuid.uuid4().hex[:8]}"
    args = ["dlq", command, url, "--action", action, "--idle", "1"]
    if command == "show":
        args += ["--id", "x"]
    if command == "purge":
        args += ["--yes"]
    assert main(args) == 4  # docs/cli.md: not found
    err = capsys.readouterr().err
    assert f"action {action!r} has no dead-letter channel '{action}.dlq'" in err
    assert not channel_exists(url, f"{action}.dlq")


@pytest.mark.parametrize("engine", ENGINES)
def test_dlq_of_an_action_that_ran_lists_and_replays_to_a_new_channel(
    engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    require_service(engine)
    url, tag = URLS[engine], uuid.uuid4().hex[:8]
    channel, action, to = f"dlq-src-{tag}", f"dlq-act-{tag}", f"dlq-to-{tag}"

    async def dead_letter_one() -> None:
        async with he.connect(url) as conn:
            receiver = conn.receiver(f"svc-{tag}")
            receiver.subscribe(
                channel,
                action=action,
                retry=he.NO_RETRIES,
                start="earliest",
                handler=lambda c, m: (_ for _ in ()).throw(RuntimeError("down")),
            )
            async with receiver:
                await conn.emitter().emit(he.Event(channel, "k", {"n": 1}))
                info = receiver.subscriptions[action]
                await eventually(
                    lambda: info.counters.dead_lettered == 1, within=60, what="dead letter"
                )

    asyncio.run(dead_letter_one())
    assert main(["dlq", "list", url, "--action", action, "--idle", "3", "--json"]) == 0
    assert '"key": "k"' in capsys.readouterr().out
    assert not channel_exists(url, to)
    code = main(["dlq", "replay", url, "--action", action, "--idle", "3", "--to", to])
    assert code == 0
    assert f"replayed 1 dead letters of {action} (1 to {to})" in capsys.readouterr().out

    async def read_copy() -> list[object]:
        got = Collector()
        async with he.connect(url) as conn:
            receiver = conn.receiver(f"svc-{tag}")
            receiver.subscribe(to, action=f"check-{tag}", start="earliest", handler=got.add_message)
            async with receiver:
                return [m.payload for m in await got.wait_for(1, within=60)]

    assert asyncio.run(read_copy()) == [{"n": 1}]
