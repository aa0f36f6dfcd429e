"""Issue 23: a Kafka member whose consumer thread stops making progress (a poll that never
returns, or a thread that dies) is noticed within ``poll_stall_timeout``, health names it,
its stack is logged, and a fresh consumer on a fresh thread replaces it: every event is
still handled (at-least-once) and health is clean again afterwards.

The stall is simulated deterministically: the member's ``Consumer`` is a subclass whose
``poll``/``consume`` block for good on the member thread once armed (as librdkafka's poll
was seen to in CI after a broker restart), so the shared broker is never restarted."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer

import hexa_event as he
from hexa_event.drivers.kafka import KafkaOptions, consumer, member
from hexa_event.errors import ConfigurationError
from hexa_event.testing.waiting import eventually

pytestmark = pytest.mark.kafka

MARGIN = 3.0
"""poll_stall_timeout of these tests (seconds)."""
TOTAL = 600


class FaultyConsumer(Consumer):  # type: ignore[misc]
    """The first consumer of ``group`` stalls (or raises) in poll/consume once armed, on
    the member's own thread only (the abandoned consumer's close on another thread works)."""

    group = ""
    mode = "stall"
    armed = threading.Event()
    release = threading.Event()
    struck = threading.Event()
    target: FaultyConsumer | None = None

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        cls = type(self)
        if config.get("group.id") == cls.group and cls.target is None:
            cls.target = self

    def _strike(self) -> bool:
        cls = type(self)
        if not (
            cls.mode != "close"
            and cls.armed.is_set()
            and self is cls.target
            and threading.current_thread().name.startswith("hexa-kafka-consumer-")
        ):
            return False
        cls.struck.set()
        if cls.mode == "die":
            cls.armed.clear()  # once: the replacement is a healthy consumer
            raise RuntimeError("simulated failure in the consumer thread")
        cls.release.wait()  # librdkafka's poll never returning
        return True

    def close(self, *args: Any, **kwargs: Any) -> Any:
        cls = type(self)
        if cls.mode == "close" and cls.armed.is_set() and self is cls.target:
            cls.struck.set()
            cls.release.wait()  # librdkafka's close joining its threads for ever
        return super().close(*args, **kwargs)

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        if self._strike():
            return None
        return super().poll(*args, **kwargs)

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        if self._strike():
            return []
        return super().consume(*args, **kwargs)


def test_poll_stall_timeout_is_checked_and_parsed_from_the_url() -> None:
    assert KafkaOptions().poll_stall_timeout == 60.0
    assert KafkaOptions.from_url("kafka://h:9092?poll_stall_timeout=5").poll_stall_timeout == 5
    assert KafkaOptions(poll_stall_timeout=0).poll_stall_timeout == 0  # the stall check off
    with pytest.raises(ConfigurationError, match="poll_stall_timeout"):
        KafkaOptions.from_url("kafka://h:9092?poll_stall_timeout=soon")
    with pytest.raises(ConfigurationError, match="poll_stall_timeout"):
        KafkaOptions(poll_stall_timeout=-1)
    with pytest.raises(ConfigurationError, match="poll_stall_timeout"):
        KafkaOptions(poll_stall_timeout=float("nan"))


@pytest.mark.parametrize("mode", ["stall", "die"])
async def test_a_stalled_or_dead_member_is_noticed_and_replaced(
    kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    tag = uuid.uuid4().hex[:10]
    channel, action = f"kwd-{tag}", f"kwda-{tag}"
    monkeypatch.setattr(FaultyConsumer, "group", action)
    monkeypatch.setattr(FaultyConsumer, "mode", mode)
    monkeypatch.setattr(FaultyConsumer, "armed", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "release", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "struck", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "target", None)
    monkeypatch.setattr(member, "Consumer", FaultyConsumer)
    caplog.set_level(logging.WARNING, logger="hexa_event.drivers.kafka")

    conn = he.connect(f"kafka://{kafka_bootstrap}", partitions=3, poll_stall_timeout=MARGIN)
    await conn.provision([channel])
    handled: Counter[int] = Counter()
    receiver = conn.receiver("watchdog")

    @receiver.subscribe(channel, action=action)
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        handled[msg.payload["i"]] += 1

    reasons: list[str] = []
    watching = True

    async def watch() -> None:
        while watching:
            health = receiver.health()
            if not health["healthy"]:
                reasons.append(health["reason"])
            await asyncio.sleep(0.05)

    emitter = conn.emitter()
    events = [he.Event(channel, f"k{i % 13}", {"i": i}) for i in range(TOTAL)]
    try:
        async with receiver:
            watcher = asyncio.create_task(watch())
            await emitter.emit_many(events[: TOTAL // 3])
            await eventually(lambda: len(handled) >= 50, within=60, what="first events")
            FaultyConsumer.armed.set()
            await asyncio.to_thread(FaultyConsumer.struck.wait, 30)
            struck_at = time.monotonic()
            assert FaultyConsumer.struck.is_set(), "the member thread never polled again"
            await emitter.emit_many(events[TOTAL // 3 :])
            # Noticed within the bound (the margin past the poll's own wait, plus the
            # watchdog's period and a noisy machine's slack)...
            word = "has not polled for" if mode == "stall" else "died: the consumer thread"
            await eventually(lambda: any(word in r for r in reasons), within=MARGIN + 10, what=word)
            noticed = time.monotonic() - struck_at
            # ...every event handled at least once, by the replacement...
            await eventually(
                lambda: len(handled) == TOTAL,
                within=90,
                what=f"every event handled (have {len(handled)} of {TOTAL})",
            )
            # ...and health clean again.
            await eventually(
                lambda: receiver.health()["healthy"],
                within=30,
                what=f"healthy again ({receiver.health()['reason']})",
            )
            watching = False
            await watcher
    finally:
        watching = False
        FaultyConsumer.release.set()  # let the abandoned thread end
        await conn.close()
    assert set(handled) == set(range(TOTAL))
    stalled = [r for r in reasons if word in r]
    assert f"kafka consumer thread for action {action!r}" in stalled[0], stalled[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "its stack:" in logged, logged[-3000:]
    assert "replaced by a new consumer" in logged, logged[-3000:]
    if mode == "stall":
        assert "_strike" in logged  # the stuck thread's own frames
    print(
        f"\n{mode}: noticed {noticed:.1f}s after it struck, {sum(handled.values()) - TOTAL} "
        "redeliveries"
    )


async def test_a_consumer_stuck_in_close_does_not_hold_the_receiver_close(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() gives a member (or an abandoned one) revoke_timeout + _CLOSE_MARGIN seconds,
    then goes on without it (the thread is a daemon)."""
    tag = uuid.uuid4().hex[:10]
    channel, action = f"kwc-{tag}", f"kwca-{tag}"
    monkeypatch.setattr(FaultyConsumer, "group", action)
    monkeypatch.setattr(FaultyConsumer, "mode", "close")
    monkeypatch.setattr(FaultyConsumer, "armed", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "release", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "struck", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "target", None)
    monkeypatch.setattr(member, "Consumer", FaultyConsumer)
    monkeypatch.setattr(consumer, "_CLOSE_MARGIN", 2.0)
    conn = he.connect(f"kafka://{kafka_bootstrap}", revoke_timeout=1)
    await conn.provision([channel])
    receiver = conn.receiver("stuck-close")
    receiver.subscribe(channel, action=action, handler=lambda c, m: None)
    try:
        await receiver.start()
        FaultyConsumer.armed.set()
        began = time.monotonic()
        await receiver.close()
        took = time.monotonic() - began
        assert FaultyConsumer.struck.is_set(), "close never reached the consumer"
    finally:
        FaultyConsumer.release.set()
        await conn.close()
    assert took < 1 + 2.0 + 5, f"receiver close took {took:.1f}s"


async def test_deliveries_in_flight_at_a_stall_come_again_from_the_new_member(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handlers still busy when the member stalls: the old consumer's revoke waits
    ``revoke_timeout`` for them, then leaves without committing past them, so the new
    member hands them out again (at-least-once; the old runs finish too, and the new ones
    wait behind them in their keys' lanes)."""
    tag = uuid.uuid4().hex[:10]
    channel, action = f"kwi-{tag}", f"kwia-{tag}"
    monkeypatch.setattr(FaultyConsumer, "group", action)
    monkeypatch.setattr(FaultyConsumer, "mode", "stall")
    monkeypatch.setattr(FaultyConsumer, "armed", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "release", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "struck", threading.Event())
    monkeypatch.setattr(FaultyConsumer, "target", None)
    monkeypatch.setattr(member, "Consumer", FaultyConsumer)
    conn = he.connect(
        f"kafka://{kafka_bootstrap}", partitions=3, poll_stall_timeout=MARGIN, revoke_timeout=1
    )
    await conn.provision([channel])
    total, held = 120, set(range(40, 44))
    began: Counter[int] = Counter()
    handled: Counter[int] = Counter()
    gate = asyncio.Event()
    receiver = conn.receiver("inflight")

    @receiver.subscribe(channel, action=action)
    async def handle(_c: he.Context, msg: he.Message[Any]) -> None:
        i = msg.payload["i"]
        began[i] += 1
        if i in held:
            await gate.wait()
        handled[i] += 1

    events = [he.Event(channel, f"k{i}", {"i": i}) for i in range(total)]
    try:
        async with receiver:
            await conn.emitter().emit_many(events)
            await eventually(
                lambda: all(began[i] for i in held) and len(handled) >= total - len(held),
                within=60,
                what="everything handled but the held events, which are in flight",
            )
            FaultyConsumer.armed.set()
            await eventually(
                lambda: "has not polled" in receiver.health()["reason"],
                within=MARGIN + 10,
                what="the stall noticed",
            )
            await eventually(
                lambda: receiver.health()["healthy"],
                within=60,
                what=f"replaced ({receiver.health()['reason']})",
            )
            gate.set()  # the old runs finish (their acks go nowhere: the partitions moved)
            await eventually(
                lambda: all(handled[i] == 2 for i in held),
                within=60,
                what=f"the held events handed out again by the new member ({dict(handled)})",
            )
    finally:
        gate.set()
        FaultyConsumer.release.set()
        await conn.close()
    assert FaultyConsumer.struck.is_set()
    assert set(handled) == set(range(total))
