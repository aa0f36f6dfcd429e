"""Go hexa-event (hafka wire format, sarama v1.27.2) <-> our Kafka driver, on the real broker.

The Go program (``main.go`` beside this file) is built once per session into the user cache
(``GOFLAGS=-mod=mod``; modules come from the Go module proxy). Without Go or its modules the
tests skip with the reason, and fail when ``CI=true``.

github.com/kamva/hexa-event itself is not served by the module proxy (403 "This module
version is not available" for every version); ``main.go`` reproduces hafka's wire behaviour
with the sarama version hafka pins, see its package comment.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.struct_pb2 import Struct

import hexa_event
from hexa_event.context import Context, User
from hexa_event.driver import SubscriptionSpec
from hexa_event.drivers.kafka import KafkaSubscriptionOptions, sarama_partition
from hexa_event.event import Event
from hexa_event.retry import RetryPolicy
from hexa_event.testing.waiting import Collector, eventually
from hexa_event_services import require_service

pytestmark = pytest.mark.kafka

HERE = Path(__file__).parent
BOOTSTRAP = os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
PARTITIONS = 3


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and the Go interop program is unavailable: {reason}")
    pytest.skip(f"Go interop program unavailable: {reason}")


@pytest.fixture(scope="session")
def go_program() -> Path:
    """Build ``main.go`` (cached outside the repo) and return the binary."""
    fallback = Path("/usr/local/go/bin/go")
    go = shutil.which("go") or (str(fallback) if fallback.exists() else None)
    if go is None:
        _unavailable("no `go` on PATH (install Go >= 1.22)")
    cache = Path(os.environ.get("HEXA_EVENT_CACHE", Path.home() / ".cache" / "hexa-event"))
    binary = cache / "interop-go" / "interop"
    binary.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    result = subprocess.run(
        [str(go), "build", "-o", str(binary), "."],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        _unavailable(f"`go build` failed: {result.stderr.strip()[-800:]}")
    return binary


async def _run_go(binary: Path, *args: str, within: float = 90.0) -> list[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        *args,
        "-brokers",
        BOOTSTRAP,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode == 0, f"go {args[0]} failed: {err.decode()[-2000:]}"
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    return [line for line in lines if "ID" in line]  # handled records, not session events


@pytest.fixture
def kafka() -> None:
    require_service("kafka")


def test_partitions_match_sarama_vectors() -> None:
    """sarama_partition() matches partitions printed by a real sarama run (incl. negatives)."""
    vectors = (HERE.parent.parent / "drivers" / "kafka" / "sarama_vectors.txt").read_text()
    rows = [line.split(" ", 2) for line in vectors.splitlines() if line]
    assert len(rows) > 400
    for partitions, partition, key in rows:
        assert sarama_partition(key, int(partitions)) == int(partition), key


async def test_python_emits_go_handles(kafka: None, go_program: Path) -> None:
    """Go (hafka semantics) reads our payloads, context, reply channel, and our partitions;
    its retry chain for our events uses the same topic names as ours."""
    tag = uuid.uuid4().hex[:8]
    topic, action = f"py2go-{tag}", f"go-act-{tag}"
    driver = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=PARTITIONS)
    try:
        await driver.provision([topic, f"{action}.retry.1", f"{action}.retry.2", f"{action}.dlq"])
        user = User(id="u-7", email="u7@example.com", name="Seven", username="seven")
        ctx = Context(correlation_id=f"corr-{tag}", locale="fa-IR", user=user)
        json_emitter = driver.emitter()
        proto_emitter = driver.emitter(codec="protobuf")
        ids = []
        for i in range(10):
            ids.append(
                await json_emitter.emit(
                    Event(topic, f"k{i}", {"id": f"o{i}", "total": i}, reply_channel="replies"),
                    ctx,
                )
            )
        payload = Struct()
        payload.update({"id": "p1", "total": 5})
        ids.append(await proto_emitter.emit(Event(topic, "kp", payload), ctx))
    finally:
        await driver.close()
    # k3 fails in Go every time: 1 + 2 retries, then the dlq (not consumed).
    got = await _run_go(
        go_program,
        "consume",
        "-topic",
        topic,
        "-action",
        action,
        "-n",
        str(11 + 2),
        "-retries",
        "2",
        "-fail-keys",
        "k3",
    )
    main = [r for r in got if r["Topic"] == topic]
    assert len(main) == 11
    for record in main:
        assert record["Correlation"] == f"corr-{tag}"
        assert record["Locale"] == "fa-IR"
        assert record["User"]["_user_identifier"] == "u-7"
        assert record["User"]["_user_email"] == "u7@example.com"
        assert record["User"]["_user_type"] == "_regular"
        partition = int(record["ID"].rsplit("-", 2)[1])
        assert partition == sarama_partition(record["Key"], PARTITIONS), record["Key"]
        assert record["Headers"]["HEXA_EVENT_ID"] in ids
        if record["Key"] == "kp":
            assert record["Encoder"] == "protobuf"
            assert record["Payload"] == {"id": "p1", "total": 5}
        else:
            assert record["Encoder"] == "json"
            assert record["Reply"] == "replies"
            i = int(record["Key"][1:])
            assert record["Payload"] == {"id": f"o{i}", "total": i}
    retried = sorted(r["Topic"] for r in got if r["Topic"] != topic)
    assert retried == [f"{action}.retry.1", f"{action}.retry.2"]
    k3 = next(r for r in main if r["Key"] == "k3")
    assert all(r["RootID"] == k3["ID"] for r in got if r["Key"] == "k3")


async def test_go_emits_python_handles(kafka: None, go_program: Path) -> None:
    """We read Go's json and protojson payloads and its context; Go's retry copies (with
    HEXA_ROOT_* headers, no HEXA_EVENT_ID) reach our receiver of the same action."""
    tag = uuid.uuid4().hex[:8]
    json_topic, proto_topic = f"go2py-json-{tag}", f"go2py-proto-{tag}"
    action = f"py-act-{tag}"
    driver = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=PARTITIONS)
    try:
        await driver.provision([json_topic, proto_topic, f"{action}.retry.1", f"{action}.dlq"])
        await _run_go(go_program, "emit", "-topic", json_topic, "-n", "5", "-encoder", "json")
        await _run_go(go_program, "emit", "-topic", proto_topic, "-n", "5", "-encoder", "protobuf")
        # Go's member of this action fails k1 once: a hafka retry copy in <action>.retry.1,
        # which it leaves (its back-off is 5 s; it stops after the 5 source records, which it
        # commits) to our member of the same action.
        await _run_go(
            go_program,
            "consume",
            "-topic",
            json_topic,
            "-action",
            action,
            "-n",
            "5",
            "-retries",
            "1",
            "-fail-keys",
            "k1",
            "-initial",
            "5s",
        )
    finally:
        await driver.close()

    retried = Collector()
    receiver = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=PARTITIONS).receiver("py")
    receiver.subscribe(
        json_topic,
        action=action,
        retry=RetryPolicy(max_retries=1, initial_delay=0.1),
        handler=lambda c, m: retried.add((c, m)),
    )
    fresh = Collector()
    receiver.subscribe(json_topic, action=f"{action}-json", handler=lambda c, m: fresh.add((c, m)))
    proto = Collector()
    receiver.subscribe(
        proto_topic,
        action=f"{action}-proto",
        payload=Struct,
        handler=lambda c, m: proto.add((c, m)),
    )
    async with receiver:
        everything = [*await fresh.wait_for(5, within=60), *await proto.wait_for(5, within=60)]
        await eventually(
            lambda: any(m.delivered_from == f"{action}.retry.1" for _, m in retried.items),
            within=60,
            what=f"Go's retry copy in {action}.retry.1",
        )
    for ctx, msg in retried.items:
        if msg.delivered_from != f"{action}.retry.1":
            continue  # the group's main-topic records Go had not committed yet
        assert msg.key == "k1"
        assert msg.channel == json_topic or msg.channel == f"{action}.retry.1"
        assert ctx.root_event_id.startswith(f"{json_topic}-")
        assert ctx.root_handler_action == action
        assert ctx.correlation_id.startswith("go-corr-")
    for ctx, msg in everything:
        assert ctx.correlation_id.startswith("go-corr-")
        assert ctx.locale == "fa-IR"
        assert ctx.user is not None
        assert ctx.user.id == "go-user"
        assert ctx.user.email == "go-user@example.com"
        assert msg.reply_channel == "go-replies"
        # Foreign producer: the id is the broker coordinates, as Go computes it.
        assert msg.id == ctx.event_id
        assert msg.id.startswith(f"{msg.channel}-")
        if msg.codec == "protobuf":
            assert isinstance(msg.payload, Struct)
            assert str(msg.payload["id"]).startswith("o")
        else:
            assert msg.payload["id"].startswith("o")


# -- a Go fleet and Python services on one action (issue 10) -------------------------------------


class _GoMember:
    """A Go consumer running beside the test, its JSON lines collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            if line.strip():
                self.lines.append(json.loads(line))

    @property
    def records(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "ID" in line]

    def claims(self) -> list[dict[str, list[int]]]:
        return [line["Claims"] for line in self.lines if line.get("Event") == "setup"]

    async def finish(self, within: float = 90.0) -> None:
        try:
            await asyncio.wait_for(self.proc.wait(), within)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
        await self._reader
        assert self.proc.stderr is not None
        err = (await self.proc.stderr.read()).decode()
        assert self.proc.returncode == 0, f"go consume failed: {err[-2000:]}"
        # A failed group session is retried after hexa-event's 30 s back-off (as hafka's
        # receiver does), so it is a failure here, not noise.
        failures = [line for line in err.splitlines() if line.startswith("consume:")]
        assert not failures, f"the Go member's group sessions failed: {failures[:5]}"


async def _start_go(binary: Path, *args: str) -> _GoMember:
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        *args,
        "-brokers",
        BOOTSTRAP,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return _GoMember(proc)


def _held(receiver: Any, action: str, topic: str) -> int:
    """Partitions of ``topic`` the receiver's member of ``action`` holds."""
    held = receiver.health()["actions"][action]["assignment"]
    return sum(1 for a in held if a.rsplit("-", 1)[0] == topic)


def _eager() -> KafkaSubscriptionOptions:
    return KafkaSubscriptionOptions(assignment="range")


async def test_go_and_python_members_share_one_group(kafka: None, go_program: Path) -> None:
    """One action, one eager group, a Python member leading and a Go member: 2,000 events,
    none lost, none handled twice (the group is stable while they flow). The Python member
    joins first, so it leads the group: a Go (sarama v1.27.2) leader cannot decode our
    subscription metadata (see test_a_go_leader_stalls_the_group_and_health_says_so)."""
    tag = uuid.uuid4().hex[:8]
    topic, action = f"fleet-{tag}", f"fleet-act-{tag}"
    conn = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=4)
    await conn.provision([topic])
    python: list[str] = []
    receiver = conn.receiver("fleet")
    receiver.subscribe(
        topic,
        action=action,
        dedup_ids="go",
        options=_eager(),
        handler=lambda ctx, msg: python.append(ctx.event_id),
    )
    await receiver.start()
    await eventually(
        lambda: _held(receiver, action, topic) == 4,
        within=60,
        what="the Python member to lead and hold the topic",
    )
    go = await _start_go(
        go_program,
        "consume",
        "-topic",
        topic,
        "-action",
        action,
        "-n",
        "1000000",
        "-idle",
        "6s",
        "-timeout",
        "150s",
    )
    try:
        # Both hold a share of the topic.
        await eventually(
            lambda: bool(go.claims()) and 0 < len(go.claims()[-1].get(topic, [])) < 4,
            within=60,
            what="the Go member to share the topic with the Python member",
        )
        ids = await conn.emitter().emit_many(
            Event(topic, f"k{i % 200}", {"i": i}) for i in range(2000)
        )
        assert len(ids) == 2000

        def handled() -> set[str]:
            return set(python) | {r["ID"] for r in go.records if r["Topic"] == topic}

        await eventually(lambda: len(handled()) >= 2000, within=120, what="all 2,000 events")
    finally:
        await receiver.close()
        await go.finish()
        await conn.close()
    by_go = [r["ID"] for r in go.records if r["Topic"] == topic]
    everything = python + by_go
    assert len(set(everything)) == 2000  # none lost (ids are coordinates on both sides)
    assert python
    assert by_go
    twice = {i for i in everything if everything.count(i) > 1}
    assert not twice, f"handled twice: {sorted(twice)[:10]}"
    assert all(r["Action"] == action for r in go.records)


async def test_a_go_leader_stalls_the_group_and_health_says_so(
    kafka: None, go_program: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented limit: when the Go member leads the group, sarama v1.27.2 cannot
    decode librdkafka's subscription metadata, fails its session and backs off 30 s; the
    group stalls (nothing is handled) until sarama's session times out, and meanwhile our
    member holds nothing: its health says so instead of "healthy"."""
    from hexa_event.drivers.kafka import member

    monkeypatch.setattr(member, "STUCK_AFTER", 3.0)
    monkeypatch.setattr(member, "STATS_INTERVAL", 0.5)
    tag = uuid.uuid4().hex[:8]
    topic, action = f"stall-{tag}", f"stall-act-{tag}"
    conn = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=4, assignment_timeout=1)
    await conn.provision([topic])
    go = await _start_go(
        go_program,
        "consume",
        "-topic",
        topic,
        "-action",
        action,
        "-n",
        "1000000",
        "-timeout",
        "150s",
    )
    receiver = conn.receiver("stall")
    receiver.subscribe(topic, action=action, options=_eager(), handler=lambda ctx, msg: None)
    try:
        await eventually(lambda: bool(go.claims()), within=60, what="the Go member to lead")
        seen: list[dict[str, Any]] = []

        async def watch() -> None:
            while True:
                health = receiver.health()
                if "rebalancing" in health["reason"]:
                    seen.append(health)
                await asyncio.sleep(0.1)

        await receiver.start()
        watcher = asyncio.create_task(watch())
        try:
            # The group stalls until sarama's session times out; then our member leads,
            # Go rejoins after its back-off and the group settles.
            await eventually(lambda: bool(seen), within=60, what="health to report the stall")
            await eventually(
                lambda: _held(receiver, action, topic) > 0 and receiver.health()["healthy"],
                within=120,
                what="the group to settle with our member leading",
            )
        finally:
            watcher.cancel()
        health = seen[0]
        assert not health["healthy"]
        assert "holds no partitions" in health["reason"]
        assert health["actions"][action]["assignment"] == []
    finally:
        await receiver.close()
        go.proc.kill()
        await go.proc.wait()
        await conn.close()
    assert go.proc.stderr is not None
    err = (await go.proc.stderr.read()).decode()
    assert "error decoding packet" in err, err[-2000:]


async def test_mixed_retry_chain_counts_attempts_by_topic(kafka: None, go_program: Path) -> None:
    """Python fails attempt 1, Go fails the copy in .retry.1 (forwarding our headers), Python
    fails the copy in .retry.2: that is attempt 3, the last of max_retries=2, so the event
    goes to the dead letter after 3 runs in all, as Go's policy says (not a 4th run)."""
    tag = uuid.uuid4().hex[:8]
    topic, action = f"chain-{tag}", f"chain-act-{tag}"
    conn = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=1)
    runs: list[tuple[str, int]] = []

    def failing(ctx: Context, msg: Any) -> None:
        runs.append((msg.delivered_from or msg.channel, msg.attempt))
        raise RuntimeError(f"python fails attempt {msg.attempt}")

    def python_member() -> Any:
        receiver = conn.receiver("chain")
        receiver.subscribe(
            topic,
            action=action,
            options=_eager(),
            retry=RetryPolicy(max_retries=2, initial_delay=2.0),
            handler=failing,
        )
        return receiver

    try:
        await conn.provision([topic, f"{action}.retry.1", f"{action}.retry.2", f"{action}.dlq"])
        await conn.emitter().emit(Event(topic, "k", {"v": 1}))
        first = python_member()
        async with first:
            await eventually(
                lambda: first.health()["actions"][action]["retried"] >= 1,
                within=60,
                what="the first failure's copy in .retry.1",
            )
        # Go, one member of the same group: handles the .retry.1 copy, fails, forwards it.
        go = await _start_go(
            go_program,
            "consume",
            "-topic",
            topic,
            "-action",
            action,
            "-retries",
            "2",
            "-fail-all",
            "-n",
            "1",
            "-initial",
            "1s",
        )
        await go.finish()
        assert [r["Topic"] for r in go.records] == [f"{action}.retry.1"]
        third = python_member()
        async with third:
            await eventually(
                lambda: third.health()["actions"][action]["dead_lettered"] >= 1,
                within=60,
                what="the dead letter after the third run",
            )
        dlq = await conn.subscribe(
            SubscriptionSpec(group=f"{action}-dlq-reader", channels=(f"{action}.dlq",))
        )
        async with asyncio.timeout(30):
            (letter,) = await dlq.fetch(10)
        assert letter.record.headers["HEXA_ATTEMPT"] == b"3"
        letter.ack()
        await dlq.settle([letter])
        await dlq.close()
    finally:
        await conn.close()
    assert runs == [(topic, 1), (f"{action}.retry.2", 3)]
    assert len(runs) + len(go.records) == 3


async def test_go_dedup_mode_gives_the_same_four_keys_as_go(kafka: None, go_program: Path) -> None:
    """For the same records (first deliveries and a Go retry copy with root headers), a
    Python handler with dedup_ids="go" sees exactly Go's HEXA_EVENT_ID, action, root id and
    root action."""
    tag = uuid.uuid4().hex[:8]
    topic, action = f"dedup-{tag}", f"dedup-act-{tag}"
    conn = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=2)
    try:
        await conn.provision([topic, f"{action}.retry.1", f"{action}.dlq"])
        await conn.emitter().emit_many(Event(topic, f"k{i}", {"i": i}) for i in range(5))
        go = await _start_go(
            go_program,
            "consume",
            "-topic",
            topic,
            "-action",
            action,
            "-retries",
            "1",
            "-fail-keys",
            "k1",
            "-n",
            "6",
        )
        await go.finish()
        go_keys = {
            r["ID"]: (r["ID"], r["Action"], r["RootID"], r["RootAction"]) for r in go.records
        }
        assert len(go_keys) == 6
        seen: dict[str, tuple[str, str, str, str]] = {}
        receiver = conn.receiver("dedup")
        receiver.subscribe(
            topic,
            action=action,
            group=f"{action}-python",  # its own group: it reads the same records as Go
            dedup_ids="go",
            retry=RetryPolicy(max_retries=1, initial_delay=0.1),
            handler=lambda ctx, msg: seen.__setitem__(
                ctx.event_id,
                (ctx.event_id, ctx.handler_action, ctx.root_event_id, ctx.root_handler_action),
            ),
        )
        async with receiver:
            await eventually(lambda: len(seen) >= 6, within=60, what="the six records")
    finally:
        await conn.close()
    assert seen == go_keys
    copy = next(k for k in go_keys.values() if k[0].startswith(f"{action}.retry.1-"))
    assert copy[2].startswith(f"{topic}-")  # the root is the original record, from headers


async def test_go_handler_answers_a_python_request(kafka: None, go_program: Path) -> None:
    """A Go (hafka) handler reads ReplyChannel and emits to it with its context: each Python
    request gets its own answer, matched by correlation id (Go writes no HEXA_REPLY_TO)."""
    tag = uuid.uuid4().hex[:8]
    topic, action = f"py-req-{tag}", f"go-replier-{tag}"
    driver = hexa_event.connect(f"kafka://{BOOTSTRAP}", partitions=PARTITIONS)
    try:
        await driver.provision([topic])
        emitter = driver.emitter()
        go = asyncio.create_task(
            _run_go(go_program, "consume", "-topic", topic, "-action", action, "-n", "3", "-reply")
        )

        async def ask(i: int) -> None:
            ctx = Context(correlation_id=f"corr-{tag}-{i}", user=User(id="u-1"))
            reply = await emitter.request(
                Event(topic, f"k{i}", {"id": f"q{i}", "total": i}), ctx, timeout=60
            )
            assert reply.payload == {"id": f"q{i}", "answered_by": "go"}
            assert reply.headers["_ctx_correlation_id"] == ctx.correlation_id.encode()
            assert "HEXA_REPLY_TO" not in reply.headers

        await asyncio.gather(*(ask(i) for i in range(3)))
        handled = await go
        assert sorted(r["Payload"]["id"] for r in handled) == ["q0", "q1", "q2"]
        assert {r["Reply"] for r in handled} == {emitter.reply_channel}
        assert emitter.dropped_replies == 0
    finally:
        await driver.close()
