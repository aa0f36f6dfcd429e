"""Partitions: key order across processes of one action, leases, hand-over, the layout."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from nats_helpers import PARTITIONED_OPTIONS, PARTITIONS, TEST_OPTIONS, nats_url

import hexa_event as he
from hexa_event.driver import RawRecord, SubscriptionSpec
from hexa_event.drivers.nats import NatsDriver, NatsSubscriptionOptions
from hexa_event.drivers.nats.gaps import KeyGate
from hexa_event.drivers.nats.naming import (
    channel_subject,
    consumer_name,
    murmur2,
    partition_of,
    partition_prefix,
    pattern_filter,
    subject_channel,
    subject_partition,
)
from hexa_event.drivers.nats.partitioned import PartitionedSubscription, assign
from hexa_event.drivers.nats.streams import JetStreamApi, members_bucket
from hexa_event.errors import ConfigurationError, DriverError
from hexa_event.testing.waiting import eventually

# -- the layout (no server) -------------------------------------------------------------------


def test_murmur2_is_kafka_s() -> None:
    """The partitioner is Kafka's: these are the vectors of Kafka's own unit tests."""
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    assert {data: murmur2(data) for data in vectors} == vectors


def test_partition_of_keys_and_keyless_records() -> None:
    """A key always lands in one partition; keyless records spread by their event id."""

    def rec(key: str, event_id: str | None = None) -> RawRecord:
        headers = {"HEXA_EVENT_ID": event_id.encode()} if event_id else {}
        return RawRecord("c", key, headers, b"")

    assert partition_of(rec("foobar"), 8) == (-790332482 & 0x7FFFFFFF) % 8
    assert partition_of(rec("k", "e1"), 8) == partition_of(rec("k", "e2"), 8)
    assert partition_of(rec(""), 8) == 0
    spread = {partition_of(rec("", f"event-{i}"), 8) for i in range(100)}
    assert spread == set(range(8))
    keys = {partition_of(rec(f"key-{i}"), 4) for i in range(50)}
    assert keys == set(range(4))


@pytest.mark.parametrize(
    "channel", ["orders", "orders.eu", "%p3", "%p3.x", "a..b", ".lead", "50%", "x y*>"]
)
def test_partitioned_subjects_invert_one_to_one(channel: str) -> None:
    """(channel, partition) <-> subject is one-to-one; no channel looks like a partition."""
    for partition in (None, 0, 7, 123):
        subject = channel_subject("hexa", channel, partition)
        assert subject_channel("hexa", subject) == channel
        assert subject_partition("hexa", subject) == partition
    assert channel_subject("hexa", channel, 3) != channel_subject("hexa", channel, None)


def test_a_pattern_filters_one_partition_with_one_subject() -> None:
    """The partition token follows the prefix, so a pattern's filter stays one subject."""
    assert pattern_filter(partition_prefix("hexa", 3), r"orders\.[a-z]+") == "hexa.%p3.orders.>"
    assert pattern_filter(partition_prefix("hexa", 3), r".*") == "hexa.%p3.>"


def test_assignment_is_the_same_for_every_member() -> None:
    """Every member derives the same assignment; together they cover every partition once,
    in equal shares, and a newcomer moves few partitions besides those it takes."""
    for partitions, count in ((4, 3), (8, 3), (16, 5), (3, 3), (2, 3)):
        members = tuple(f"member-{n}" for n in range(count))
        held = {m: assign(tuple(reversed(members)), partitions, m) for m in members}
        every = [p for share in held.values() for p in share]
        assert sorted(every) == list(range(partitions))
        sizes = [len(share) for share in held.values()]
        assert max(sizes) - min(sizes) <= 1
        after = {m: assign((*members, "newcomer"), partitions, m) for m in members}
        taken = assign((*members, "newcomer"), partitions, "newcomer")
        moved = sum(len(held[m] - after[m]) for m in members)
        assert moved <= len(taken) + 2, (partitions, count, moved, taken)
    assert assign(("a",), 4, "a") == frozenset(range(4))
    assert assign(("a", "b", "c"), 2, "c") | assign(("a", "b", "c"), 2, "a") | assign(
        ("a", "b", "c"), 2, "b"
    ) == frozenset({0, 1})


def test_partitions_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="partitions"):
        NatsDriver(partitions=-1)
    with pytest.raises(ConfigurationError, match="partitions"):
        NatsDriver(partitions=True)  # type: ignore[arg-type]
    assert NatsDriver(partitions=8).features.ordered_per_key
    assert not NatsDriver().features.ordered_per_key
    assert NatsDriver.from_url("nats://h:4222?partitions=6").options.partitions == 6


# -- against the server -----------------------------------------------------------------------


@pytest.fixture
async def drivers(nats_server: str) -> AsyncIterator[list[NatsDriver]]:
    made: list[NatsDriver] = []
    yield made
    for driver in made:
        await driver.close()


@pytest.mark.nats
async def test_a_driver_with_another_partition_count_is_refused(
    drivers: list[NatsDriver],
) -> None:
    """The stream records its partition count; a driver with another one is refused, with
    the fix named (unpartitioned streams count as 0)."""
    right = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.append(right)
    await right.provision([])
    for partitions in (PARTITIONS + 1, 0):
        wrong = NatsDriver.from_url(nats_url(), **{**PARTITIONED_OPTIONS, "partitions": partitions})
        drivers.append(wrong)
        with pytest.raises(ConfigurationError) as refused:
            await wrong.publish([RawRecord("c", "k", {}, b"x")])
        text = str(refused.value)
        assert f"laid out for {PARTITIONS} partitions" in text
        assert f"NatsOptions(partitions={PARTITIONS})" in text
        assert f"?partitions={PARTITIONS}" in text
    plain = NatsDriver.from_url(nats_url(), **TEST_OPTIONS)
    drivers.append(plain)
    await plain.provision([])
    partitioned = NatsDriver.from_url(nats_url(), **{**TEST_OPTIONS, "partitions": 2})
    drivers.append(partitioned)
    with pytest.raises(ConfigurationError, match="is unpartitioned"):
        await partitioned.provision([])


@pytest.mark.nats
async def test_failover_is_refused_on_a_partitioned_stream(drivers: list[NatsDriver]) -> None:
    driver = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.append(driver)
    spec = SubscriptionSpec(
        group=f"g-{uuid.uuid4().hex[:8]}",
        channels=("c",),
        options=NatsSubscriptionOptions(failover=True),
    )
    with pytest.raises(ConfigurationError, match="drop failover"):
        await driver.subscribe(spec)


@pytest.mark.nats
async def test_status_shows_partitions_and_membership(drivers: list[NatsDriver]) -> None:
    """One member holds every partition; a second one takes half, both say so."""
    channel, group = f"ps-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    options = NatsSubscriptionOptions(heartbeat=0.5, ack_wait=2)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    first = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    second = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.extend([first, second])
    one = await first.subscribe(spec)
    await first.publish(
        [RawRecord(channel, f"k{i}", {"HEXA_EVENT_ID": f"e{i}".encode()}, b"") for i in range(40)]
    )

    def held(status: Any) -> list[str]:
        return [a for a in status.assignment if "%p" in a]

    await eventually(lambda: len(held(one.status())) == PARTITIONS, within=20, what="pins")
    assert one.status().assignment[-1].endswith("(1 of 1)")
    two = await second.subscribe(spec)
    await eventually(
        lambda: len(held(one.status())) == len(held(two.status())) == PARTITIONS // 2,
        within=20,
        what="half each",
    )
    assert not set(held(one.status())) & set(held(two.status()))
    assert " of 2)" in two.status().assignment[-1]
    await two.close()
    await one.close()


# -- several processes ------------------------------------------------------------------------

MEMBER = r"""
import asyncio, json, sys, time
import hexa_event as he
from hexa_event.drivers.nats import NatsSubscriptionOptions

async def main() -> None:
    url, options, channel, action, name = sys.argv[1:6]
    conn = he.connect(url, **json.loads(options))
    receiver = conn.receiver(name, concurrency=16)
    out = sys.stdout

    async def handle(ctx, msg) -> None:
        started = time.monotonic_ns()
        await asyncio.sleep(0.005)
        out.write(json.dumps({"id": msg.id, "k": msg.key, "s": msg.payload["s"],
                              "t": started, "e": time.monotonic_ns(), "m": name}) + "\n")
        out.flush()

    receiver.subscribe(channel, action=action, handler=handle,
                       options=NatsSubscriptionOptions(ack_wait=2, heartbeat=0.5,
                                                       failover_timeout=3))
    await receiver.start()
    out.write(json.dumps({"ready": name}) + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    await receiver.close()
    await conn.close()
    out.write(json.dumps({"closed": name, "t": time.monotonic_ns()}) + "\n")
    out.flush()

asyncio.run(main())
"""


@dataclass
class Member:
    name: str
    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = json.loads(raw)
            if "ready" in line:
                self.ready.set()
            else:
                self.lines.append(line)

    def handled(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "id" in line]


async def start_member(name: str, channel: str, action: str) -> Member:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        MEMBER,
        nats_url(),
        json.dumps(PARTITIONED_OPTIONS),
        channel,
        action,
        name,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=1 << 20,
    )
    member = Member(name, process)
    member.reader = asyncio.create_task(member.read())
    await asyncio.wait_for(member.ready.wait(), 60)
    return member


def first_after(lines: list[dict[str, Any]], at: int, partitions: set[int]) -> float:
    """Seconds from ``at`` (monotonic ns) to the first handling of a record of
    ``partitions`` at or after it."""
    times = [
        line["t"]
        for line in lines
        if line["t"] >= at
        and partition_of(RawRecord("c", line["k"], {}, b""), PARTITIONS) in partitions
    ]
    return (min(times) - at) / 1e9 if times else float("inf")


@pytest.mark.nats
async def test_processes_share_an_action_keeping_each_key_s_order(nats_server: str) -> None:
    """Three processes on one action, 3,000 events over 50 keys emitted steadily: one member
    closes, then one is killed, mid-way. Every event is handled, each key's first handlings
    come in emit order, every member did part of the work, and the hand-overs are timed."""
    tag = uuid.uuid4().hex[:8]
    channel, action = f"mp-{tag}", f"mp-act-{tag}"
    total, keys = 3000, 50
    emitting = he.connect(nats_url(), **PARTITIONED_OPTIONS)
    await emitting.provision([channel])
    members = [await start_member(f"m{n}", channel, action) for n in range(3)]
    emitted: set[str] = set()
    try:
        emitter = emitting.emitter()

        async def emit_steadily() -> None:
            # Bursts of 5 events per key, so a key has several records in flight at once.
            for start in range(0, total, 250):
                events = (
                    he.Event(channel, f"key-{i % keys}", {"s": i // keys})
                    for i in range(start, start + 250)
                )
                emitted.update(await emitter.emit_many(events))
                await asyncio.sleep(0.25)

        emitting_task = asyncio.create_task(emit_steadily())

        def handled() -> list[dict[str, Any]]:
            return [line for m in members for line in m.handled()]

        def partitions_of(member: Member) -> set[int]:
            """The partitions ``member`` handled records of in the last half second."""
            return partitions_of_since(member, 0.5)

        def partitions_of_since(member: Member, seconds: float) -> set[int]:
            """The partitions ``member`` handled records of in the last ``seconds``."""
            since = time.monotonic_ns() - int(seconds * 1e9)
            return {
                partition_of(RawRecord("c", line["k"], {}, b""), PARTITIONS)
                for line in member.handled()
                if line["t"] >= since
            }

        await eventually(lambda: len(handled()) >= total // 4, within=120, what="a quarter")
        # the partitions it is handling now (on a loaded machine a member may handle none
        # for a while: wait for it rather than read an empty set)
        await eventually(lambda: bool(partitions_of(members[0])), within=60, what="m0 at work")
        closed_partitions = partitions_of(members[0]) or partitions_of_since(members[0], 5)
        assert closed_partitions
        closed_at = time.monotonic_ns()
        assert members[0].process.stdin is not None
        members[0].process.stdin.write(b"close\n")
        await asyncio.wait_for(members[0].process.wait(), 60)

        await eventually(lambda: len(handled()) >= total // 2, within=120, what="a half")
        killed = members[1]
        await eventually(lambda: bool(partitions_of(killed)), within=60, what="m1 at work")
        killed_partitions = partitions_of(killed) or partitions_of_since(killed, 5)
        assert killed_partitions
        killed_at = time.monotonic_ns()
        killed.process.kill()
        await killed.process.wait()

        await emitting_task
        await eventually(
            lambda: {line["id"] for line in handled()} >= emitted,
            within=120,
            what="every event handled",
        )
        lines = sorted(handled(), key=lambda line: line["t"])
        survivors = [line for line in lines if line["m"] != killed.name]
        close_gap = first_after(
            [line for line in lines if line["m"] != members[0].name], closed_at, closed_partitions
        )
        kill_gap = first_after(survivors, killed_at, killed_partitions)
        per_member = {m.name: len(m.handled()) for m in members}
        redelivered = len(lines) - len({line["id"] for line in lines})
        print(
            f"\nhandled per member {per_member}, {redelivered} handled twice; hand-over after a "
            f"clean close {close_gap:.2f}s, after a kill {kill_gap:.2f}s "
            "(ack_wait=2, failover_timeout=3)"
        )
        assert all(count > 0 for count in per_member.values()), per_member
        firsts: dict[str, list[int]] = defaultdict(list)
        seen: set[str] = set()
        for line in lines:
            if line["id"] not in seen:
                seen.add(line["id"])
                firsts[line["k"]].append(line["s"])
        for key, sequence in firsts.items():
            assert sequence == sorted(sequence), f"{key} out of order: {sequence}"
        ends: dict[str, int] = {}
        for line in lines:  # one key runs in one process at a time, also across hand-overs
            assert line["t"] >= ends.get(line["k"], 0), f"{line['k']} ran twice at once"
            ends[line["k"]] = max(ends.get(line["k"], 0), line["e"])
        assert len(firsts) == keys
        assert close_gap < 10
        assert kill_gap < 30
    finally:
        for member in members:
            if member.process.returncode is None:
                member.process.kill()
                await member.process.wait()
            if member.reader is not None:
                await asyncio.gather(member.reader, return_exceptions=True)
        await emitting.close()


@pytest.mark.nats
async def test_a_partition_moves_only_after_its_deliveries_in_flight_settle(
    drivers: list[NatsDriver],
) -> None:
    """A member that loses partitions to a newcomer keeps them until what it handed out
    is settled; then the newcomer gets what was given back, in order, before anything else."""
    channel, group = f"ho-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    options = NatsSubscriptionOptions(heartbeat=0.5, ack_wait=5)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    first = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    second = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.extend([first, second])
    keys: dict[int, str] = {}
    n = 0
    while len(keys) < PARTITIONS:  # one key per partition
        key = f"key-{n}"
        keys.setdefault(partition_of(RawRecord(channel, key, {}, b""), PARTITIONS), key)
        n += 1
    await first.publish(
        [
            RawRecord(channel, key, {"HEXA_EVENT_ID": f"{key}-{i}".encode(), "n": b"%d" % i}, b"")
            for i in range(10)
            for key in keys.values()
        ]
    )
    one = await first.subscribe(spec)
    got = []
    async with asyncio.timeout(20):
        while len(got) < 10 * PARTITIONS:
            got.extend(await one.fetch(100))
    for delivery in got:
        if int(delivery.record.headers["n"]) < 3:
            delivery.ack()
    await one.settle([d for d in got if d.outcome is not None])

    two = await second.subscribe(spec)
    assert isinstance(two, PartitionedSubscription)
    await eventually(lambda: len(two.partitions) == PARTITIONS // 2, within=20, what="join")
    moved = {keys[p] for p in two.partitions}
    waiting = asyncio.create_task(two.fetch(100))
    # The newcomer must get nothing while the first still holds deliveries of its partitions.
    done, _ = await asyncio.wait({waiting}, timeout=1.5)
    assert not done, "a partition moved before its deliveries in flight settled"
    late = [d for d in got if d.record.key in moved and int(d.record.headers["n"]) >= 7]
    for delivery in got:
        if delivery.outcome is None and delivery not in late:
            delivery.ack()
    await one.settle([d for d in got if d.outcome is not None and d not in late])
    done, _ = await asyncio.wait({waiting}, timeout=1.0)
    assert not done, "a partition moved while a delivery was still unsettled"
    for delivery in late:
        delivery.nack()
    await one.settle(late)
    again = list(await asyncio.wait_for(waiting, 20))
    async with asyncio.timeout(20):
        while len(again) < len(late):
            again.extend(await two.fetch(100))
    by_key: dict[str, list[int]] = defaultdict(list)
    for delivery in again:
        by_key[delivery.record.key].append(int(delivery.record.headers["n"]))
    assert by_key == {key: [7, 8, 9] for key in moved}
    await two.close()
    await one.close()


def test_the_gate_gives_back_held_records_after_their_key_s_delay() -> None:
    """At a hand-over, records held behind a nacked one go back with what remains of its
    delay, so they are redelivered after it."""

    @dataclass
    class Held:
        seq: int
        key: str

        @property
        def gate_key(self) -> tuple[str, str]:
            return ("c", self.key)

    gate: KeyGate[Held] = KeyGate(ack_wait=30)
    gate.nacked(Held(1, "k"), delay=10, now=100.0)
    assert not gate.admit(Held(2, "k"))
    assert not gate.admit(Held(3, "k"))
    assert gate.admit(Held(4, "other"))
    back = gate.give_back(now=104.0)
    assert [(d.seq, round(delay, 2)) for d, delay in back] == [(2, 6.05), (3, 6.05)]
    assert len(gate) == 0
    assert gate.admit(Held(5, "k"))


@pytest.mark.nats
async def test_an_idle_partition_moves_at_once(drivers: list[NatsDriver]) -> None:
    """Partitions that carried nothing yet move to a newcomer at once too (the leaving
    member stops pulling them), not after failover_timeout."""
    channel, group = f"idle-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    options = NatsSubscriptionOptions(heartbeat=0.5, ack_wait=20)  # takeover after 25 s
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    first = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    second = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.extend([first, second])
    one = await first.subscribe(spec)
    two = await second.subscribe(spec)
    assert isinstance(one, PartitionedSubscription)
    assert isinstance(two, PartitionedSubscription)
    await eventually(
        lambda: len(one.partitions) == len(two.partitions) == PARTITIONS // 2,
        within=20,
        what="half each",
    )
    records = [
        RawRecord(channel, f"k{i}", {"HEXA_EVENT_ID": f"e{i}".encode()}, b"") for i in range(40)
    ]
    mine = [r for r in records if partition_of(r, PARTITIONS) in two.partitions]
    began = time.monotonic()
    await first.publish(records)
    got = []
    async with asyncio.timeout(10):
        while len(got) < len(mine):
            got.extend(await two.fetch(100))
    print(f"\nnewcomer's first records after {time.monotonic() - began:.2f}s")
    assert {d.record.key for d in got} == {r.key for r in mine}


@pytest.mark.nats
async def test_a_lost_membership_bucket_is_created_again(drivers: list[NatsDriver]) -> None:
    """A server that lost the bucket (deleted here) gets it again with the member's lease."""
    channel, group = f"kv-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    options = NatsSubscriptionOptions(heartbeat=0.5, ack_wait=2)
    driver = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.append(driver)
    member = await driver.subscribe(
        SubscriptionSpec(group=group, channels=(channel,), options=options)
    )
    assert isinstance(member, PartitionedSubscription)
    nc = await driver.connection()
    api = JetStreamApi(nc, 5.0)
    bucket = f"KV_{members_bucket(PARTITIONED_OPTIONS['stream'])}"
    lease = f"$KV.{members_bucket(PARTITIONED_OPTIONS['stream'])}.{group}.{member.member}"
    assert await api.subjects(bucket, lease) == [lease]
    await api.request(f"STREAM.DELETE.{bucket}")

    async def leased() -> bool:
        try:
            return await api.subjects(bucket, lease) == [lease]
        except DriverError:
            return False

    deadline = time.monotonic() + 20
    while not await leased():
        assert time.monotonic() < deadline, "the bucket was not created again"
        await asyncio.sleep(0.2)
    await member.close()


@pytest.mark.nats
async def test_a_partition_pinned_elsewhere_shows_as_a_stall(drivers: list[NatsDriver]) -> None:
    """Records wait in a partition whose consumer the server keeps pinned to another client
    (one that took a record, never acks and keeps its pin alive): the member holding the
    partition receives nothing, and its status says so and why; once that client is gone
    the pin moves (after ``failover_timeout``), the records arrive and the problem clears."""
    channel, group = f"stall-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    options = NatsSubscriptionOptions(heartbeat=0.5, ack_wait=2, failover_timeout=3)
    spec = SubscriptionSpec(group=group, channels=(channel,), options=options)
    driver = NatsDriver.from_url(nats_url(), **PARTITIONED_OPTIONS)
    drivers.append(driver)
    await (await driver.subscribe(spec)).close()  # the partition consumers exist now
    key = "k"
    partition = partition_of(RawRecord(channel, key, {}, b""), PARTITIONS)
    stream = PARTITIONED_OPTIONS["stream"]
    next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer_name(group)}%p{partition}"

    def record(i: int) -> RawRecord:
        return RawRecord(channel, key, {"HEXA_EVENT_ID": f"s{i}".encode()}, b"{}")

    other = await nats.connect(nats_url())
    pinned: asyncio.Queue[str] = asyncio.Queue()

    async def on_message(msg: Any) -> None:
        if msg.reply and msg.headers and "Nats-Pin-Id" in msg.headers:
            pinned.put_nowait(msg.headers["Nats-Pin-Id"])

    inbox = other.new_inbox()
    await other.subscribe(inbox, cb=on_message)
    pull = {"batch": 1, "expires": 5_000_000_000, "group": "hexa"}
    await other.publish(next_subject, json.dumps(pull).encode(), reply=inbox)
    await driver.publish([record(0)])
    pin = await asyncio.wait_for(pinned.get(), 10)

    async def keep_pin() -> None:
        # Pulls that keep the pin alive but take nothing (1 byte at most: refused).
        keep = {**pull, "id": pin, "max_bytes": 1, "expires": 1_000_000_000}
        while True:
            await other.publish(next_subject, json.dumps(keep).encode(), reply=inbox)
            await asyncio.sleep(0.5)

    keeping = asyncio.create_task(keep_pin())
    try:
        member = await driver.subscribe(spec)
        await driver.publish([record(i) for i in range(1, 6)])
        await eventually(
            lambda: "stalls" in member.status().error,
            within=20,
            what="a stall in status",
        )
        error = member.status().error
        assert "records wait at the server" in error, error
        assert "pinned to another member" in error, error
    finally:
        keeping.cancel()
        await other.close()
    got: list[Any] = []
    async with asyncio.timeout(20):  # the pin expires 3 s after the last pull: ours now
        while len(got) < 5:
            batch = await member.fetch(10)
            for delivery in batch:
                delivery.ack()
            await member.settle(batch)
            got.extend(batch)
    await eventually(lambda: not member.status().error, within=15, what="the stall cleared")
    await member.close()
