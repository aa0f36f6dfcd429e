"""The operator commands: publish, tail, dlq list/show/replay/purge, doctor, outbox status.

The commands run in the test's event loop (``invoke``) on a named memory broker, so the test
can emit and handle around them; outbox status and doctor run the whole ``main``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

import hexa_event as he
from cli_helpers import cli
from hexa_event.cli import main
from hexa_event.driver import SubscriptionSpec
from hexa_event.testing import Collector, eventually


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A memory broker, or an SQLite log (a URL that separate processes could share)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return f"memory://cli-{uuid.uuid4().hex}"


async def dead_letters(url: str, action: str, payloads: list[Any]) -> None:
    """Dead-letter ``payloads`` (one per key k0, k1...) through a failing handler."""
    conn = he.connect(url)
    receiver = conn.receiver("svc")

    @receiver.subscribe("orders", action=action, retry=he.NO_RETRIES)
    async def fail(ctx: he.Context, msg: he.Message[Any]) -> None:
        if msg.payload.get("permanent"):
            raise he.PermanentError("bad order")
        raise TimeoutError("payment gateway timed out")

    async with receiver:
        emitter = conn.emitter()
        for i, payload in enumerate(payloads):
            await emitter.emit(he.Event("orders", f"k{i}", payload, id=f"ev-{i}"))
        info = receiver.subscriptions[action]
        await eventually(lambda: info.counters.dead_lettered == len(payloads), within=20)
    await conn.close()


async def test_publish_then_tail_from_the_beginning(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "order.json"
    data.write_text('{"total": 12.5, "items": ["a", "b"]}')
    code = await cli(
        "publish",
        url,
        "orders",
        "--key",
        "o-1",
        "--data",
        f"@{data}",
        "--correlation-id",
        "corr-9",
        "--user-id",
        "alice",
        "--header",
        "tenant=acme",
    )
    assert code == 0
    assert "published " in capsys.readouterr().out
    assert await cli("publish", url, "orders", "--key", "o-2", "--data", "[1]", "--json") == 0
    published = json.loads(capsys.readouterr().out)
    assert published["channel"] == "orders"

    assert await cli("tail", url, "orders", "--from-beginning", "-n", "2") == 0
    out = capsys.readouterr().out
    assert "── orders  key=o-1" in out
    assert "correlation_id=corr-9  user=alice (_regular)" in out
    assert '"total": 12.5' in out
    assert f"id={published['id']}" in out

    assert await cli("tail", url, "orders", "--from-beginning", "-n", "2", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    event = next(e for e in map(json.loads, lines) if e["key"] == "o-1")
    assert event["body"] == {"total": 12.5, "items": ["a", "b"]}
    assert event["context"]["user"] == {"id": "alice", "type": "_regular"}

    # A new tail starts at the latest record: nothing old within the idle time.
    assert await cli("tail", url, "orders", "--idle", "0.3") == 0
    assert capsys.readouterr().out == ""
    # The tail groups took nothing from a working group.
    got = Collector()
    conn = he.connect(url)
    receiver = conn.receiver("svc")
    receiver.subscribe("orders", action="work", handler=got.add_message)
    async with receiver:
        assert len(await got.wait_for(2, within=10)) == 2
    await conn.close()


async def test_publish_usage_errors(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("publish", url, "orders", "--key", "k", "--data", "{nope") == 2
    assert "--data is not JSON" in capsys.readouterr().err
    assert await cli("publish", url, "orders", "--key", "k", "--data", "@/nonexistent") == 2
    assert "cannot read --data file" in capsys.readouterr().err


async def test_dlq_list_show_replay_purge(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await dead_letters(url, "charge", [{"n": 0}, {"n": 1, "permanent": True}, {"n": 2}])

    assert await cli("dlq", "list", url, "--action", "charge", "--idle", "0.3") == 0
    out = capsys.readouterr().out
    assert "retries-exhausted" in out
    assert "permanent-error" in out
    assert "TimeoutError: payment gateway timed out" in out
    assert "3 pending dead letters of charge" in out
    # Listing settles nothing: the same three again, as JSON.
    assert await cli("dlq", "list", url, "--action", "charge", "--idle", "0.3", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(row["id"] for row in listed) == ["ev-0", "ev-1", "ev-2"]
    assert {row["attempts"] for row in listed} == {1}
    assert {row["source_channel"] for row in listed} == {"orders"}

    assert await cli("dlq", "show", url, "--action", "charge", "--id", "ev-1", "--idle", "0.3") == 0
    out = capsys.readouterr().out
    assert "reason: permanent-error" in out
    assert "HEXA_DEAD_LETTER_REASON = permanent-error" in out
    assert '"permanent": true' in out
    assert await cli("dlq", "show", url, "--action", "charge", "--id", "nope", "--idle", "0.3") == 4
    assert "dlq list" in capsys.readouterr().err

    # Dry run: nothing moves.
    args = ("--action", "charge", "--idle", "0.3")
    assert await cli("dlq", "replay", url, *args, "--reason", "permanent-error", "--dry-run") == 0
    assert "would replay 1 dead letters" in capsys.readouterr().out
    # Replay by filter: only the permanent one goes back to orders.
    got = Collector()
    conn = he.connect(url)
    receiver = conn.receiver("audit")
    receiver.subscribe("orders", action="audit", start="latest", handler=got.add_message)
    async with receiver:
        await eventually(lambda: receiver.health()["healthy"])
        assert await cli("dlq", "replay", url, *args, "--reason", "permanent-error") == 0
        assert "replayed 1 dead letters of charge (1 to orders)" in capsys.readouterr().out
        replayed = await got.wait_for(1, within=10)
    await conn.close()
    assert replayed[0].id == "ev-1"
    assert replayed[0].headers[he.headers.REPLAYED_FROM]
    assert await cli("dlq", "list", url, *args, "--json") == 0
    assert sorted(row["id"] for row in json.loads(capsys.readouterr().out)) == ["ev-0", "ev-2"]

    # Purge needs a yes; without a terminal it refuses with exit 6.
    assert await cli("dlq", "purge", url, *args, "--id", "ev-0") == 6
    assert "--yes" in capsys.readouterr().err
    assert await cli("dlq", "purge", url, *args, "--id", "ev-0", "--yes") == 0
    assert "purged 1 dead letters" in capsys.readouterr().out
    assert await cli("dlq", "replay", url, *args, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ids"] == ["ev-2"]
    assert await cli("dlq", "list", url, *args) == 0
    assert "no pending dead letters" in capsys.readouterr().out


def test_outbox_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hexa_event.outbox import Outbox, migrate

    db = f"sqlite:///{tmp_path / 'app.db'}"
    migrate(db)
    engine = create_engine(db)
    with engine.begin() as conn:
        Outbox().emit_many(conn, [he.Event("c", f"k{i}", i) for i in range(3)])
    engine.dispose()
    assert main(["outbox", "status", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "backlog        3 unsent rows" in out
    assert "oldest unsent  " in out
    assert main(["outbox", "status", "--db", db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["backlog"] == 3
    assert status["oldest_unsent_age"] >= 0
    assert status["sent_per_second"] is None  # nothing sent yet: rate unknown


def test_outbox_status_errors_name_the_fix(tmp_path: Path, capsys: Any) -> None:
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    create_engine(db).connect().close()  # an empty database file (a missing one: exit 4)
    assert main(["outbox", "status", "--db", db]) == 1
    assert "hexa-event outbox migrate" in capsys.readouterr().err


def test_doctor_memory_and_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "memory://x", "--channel", "orders", "--action", "bill"]) == 0
    out = capsys.readouterr().out
    assert "channels it would use: orders, bill.retry.1" in out
    assert "bill.dlq" in out
    assert "consumer groups:       bill, bill.dlq-replay" in out
    assert "diagnosis: nothing to fix" in out

    db = tmp_path / "events.db"
    create_engine(f"sqlite:///{db}").connect().close()  # an empty database file
    assert main(["doctor", f"sqlite:///{db}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    schema = next(c for c in report["checks"] if c["name"] == "schema")
    assert schema["status"] == "warn"
    assert "schema not migrated" in schema["detail"]


async def test_doctor_on_a_sqlite_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    conn = he.connect(url)
    await conn.emitter().emit(he.Event("orders", "k", {"n": 1}))
    await conn.close()
    assert await cli("doctor", url, "--channel", "orders", "--channel", "refunds") == 0
    out = capsys.readouterr().out
    assert "[ok  ] schema: the SQL driver's tables exist" in out
    assert "[ok  ] permissions: can read" in out
    assert "channel orders: has records" in out
    assert "channel refunds: no records yet" in out


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_log(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An SQLite log, or a PostgreSQL one in tables of its own (the database is shared)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return f"{request.getfixturevalue('pg_database')}?table_prefix=g{uuid.uuid4().hex[:8]}_"


async def test_doctor_reports_a_sql_group_as_the_other_engines_do(
    sql_log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``doctor --action bill`` says, per group, whether it exists and where (as Kafka,
    Pulsar and NATS do), and on SQL also its live members and the lag ``Subscription.lag``
    reads. It said nothing of a SQL group."""
    doctor = ("doctor", sql_log, "--channel", "orders", "--action", "bill")
    assert await cli(*doctor) == 0  # no tables yet: every group is new
    out = capsys.readouterr().out
    assert "[ok  ] group bill: new (starts at the earliest record)" in out

    conn = he.connect(sql_log)
    await conn.emitter().emit_many([he.Event("orders", f"k{n}", {"n": n}) for n in range(3)])
    sub = await conn.subscribe(SubscriptionSpec(group="bill", channels=("orders",)))
    try:
        assert await sub.lag() == {"orders": 3}
        assert await cli(*doctor) == 0
        out = capsys.readouterr().out
        assert "[ok  ] group bill: exists on orders; 1 live member(s); lag orders 3" in out
        assert "[ok  ] group bill.dlq-replay: new (starts at the earliest record)" in out

        got: list[Any] = []
        while len(got) < 2:
            got += await asyncio.wait_for(sub.fetch(2 - len(got)), 10)
        for delivery in got:
            delivery.ack()
        await sub.settle(got)
        assert await sub.lag() == {"orders": 1}
        assert await cli(*doctor) == 0
        assert "group bill: exists on orders; 1 live member(s); lag orders 1" in (
            capsys.readouterr().out
        )
    finally:
        await sub.close()
        await conn.close()
    assert await cli(*doctor) == 0  # the member left the group; its position stays
    out = capsys.readouterr().out
    assert "[warn] group bill: exists on orders; 0 live member(s); lag orders 1: nothing " in out
    # It can work (exit 0), but the summary does not say "nothing to fix" under a warning.
    assert "diagnosis: it can work; 1 warning(s) to look at, see warn above" in out, out
    assert "nothing to fix" not in out


async def test_doctor_reports_a_group_named_otherwise_than_its_action(
    sql_log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--group`` names a consumer group that no ``--action`` gives (a Kafka group id, a
    JetStream durable set in the subscription's options): doctor reports it as it reports
    an action's, once however often it is named. Groups came from actions only."""
    conn = he.connect(sql_log)
    await conn.emitter().emit_many([he.Event("orders", f"k{n}", {"n": n}) for n in range(3)])
    sub = await conn.subscribe(SubscriptionSpec(group="billing-v2", channels=("orders",)))
    try:
        args = ("doctor", sql_log, "--channel", "orders", "--action", "billing-v2")
        assert await cli(*args, "--group", "billing-v2", "--group", "billing-v2") == 0
        out = capsys.readouterr().out
        assert out.count("group billing-v2:") == 1, out
        assert await cli("doctor", sql_log, "--channel", "orders", "--group", "billing-v2") == 0
        out = capsys.readouterr().out
        assert "[ok  ] group billing-v2: exists on orders; 1 live member(s); lag orders 3" in out
        assert "consumer groups:       billing-v2" in out, out
    finally:
        await sub.close()
        await conn.close()


async def test_doctor_says_dead_letters_wait_for_an_operator(
    sql_log: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dead letters that ``dlq list`` has seen and nobody replayed: the replay group's
    warning says how to handle them, not to start a receiver (no receiver reads them)."""
    await dead_letters(sql_log, "bill", [{"n": 1}])
    assert await cli("dlq", "list", sql_log, "--action", "bill", "--idle", "0.3") == 0
    capsys.readouterr()
    assert await cli("doctor", sql_log, "--channel", "orders", "--action", "bill", "--json") == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    replay = checks["group bill.dlq-replay"]
    assert replay["status"] == "warn", replay
    assert replay["detail"].endswith("; lag bill.dlq 1: nothing consumes it")
    assert replay["fix"] == (
        "dead letters wait: look at them (hexa-event dlq list --action bill), "
        "then replay or purge them (hexa-event dlq replay)"
    )
    assert checks["group bill"]["status"] == "ok", checks["group bill"]


def test_doctor_unreachable_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "kafka://127.0.0.1:1", "--timeout", "2"]) == 3
    out = capsys.readouterr().out
    assert "[FAIL] reach 127.0.0.1:1" in out
    assert "fix: start the broker" in out
    url = "postgresql://app:s3cret-pw@127.0.0.1:1/app"
    assert main(["doctor", url, "--timeout", "2"]) == 3
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.out + captured.err
    assert main(["doctor", "carrier-pigeon://coop"]) == 5
    assert "unknown URL scheme" in capsys.readouterr().out


def test_missing_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HEXA_EVENT_URL", raising=False)
    assert main(["dlq", "list", "--action", "a"]) == 2
    assert "HEXA_EVENT_URL" in capsys.readouterr().err


@pytest.mark.postgres
def test_doctor_and_outbox_status_on_postgresql(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", pg_url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = {c["name"]: c for c in report["checks"]}
    assert names["connect"]["status"] == "ok"
    assert names["hexa_outbox"]["status"] == "ok"
    assert main(["outbox", "status", "--db", pg_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backlog"] == 0

    missing = pg_url.rsplit("/", 1)[0] + "/no_such_database_here"
    assert main(["doctor", missing]) == 5
    out = capsys.readouterr().out
    assert "[FAIL] database" in out
    assert "create the database" in out


async def test_tail_prints_protobuf_as_protojson_with_the_type(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from google.protobuf import wrappers_pb2

    conn = he.connect(url)
    await conn.emitter(codec="protobuf-binary").emit(
        he.Event("pb", "k", wrappers_pb2.StringValue(value="hello"))
    )
    await conn.close()
    assert await cli("tail", url, "pb", "--from-beginning", "-n", "1", "--json") == 0
    untyped = json.loads(capsys.readouterr().out)
    assert untyped["decoded_as"] == "base64"
    args = ("--type", "google.protobuf.wrappers_pb2:StringValue")
    assert await cli("tail", url, "pb", "--from-beginning", "-n", "1", *args) == 0
    out = capsys.readouterr().out
    assert '"hello"' in out
    assert await cli("tail", url, "pb", "-n", "1", "--type", "no.such:Type") == 2
    assert "cannot import the payload type" in capsys.readouterr().err
