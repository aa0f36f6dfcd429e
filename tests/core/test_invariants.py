"""The settle-everything defects rooted in the core, one test each (issue: every delivery
settled, whatever happens); the conformance suite checks the rest on every driver."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any

import pytest

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.errors import ConfigurationError, EncodeError, InvalidEventError
from hexa_event.testing import Collector, eventually


def memory() -> he.Connection:
    return he.connect(f"memory://{uuid.uuid4().hex}")


@pytest.mark.parametrize("attempt", [b"0", b"-3"])
async def test_attempt_below_one_in_place_is_no_hot_loop(attempt: bytes) -> None:
    """HEXA_ATTEMPT <= 0 naming this action as root, retried in place: 1 + max_retries runs."""
    conn = memory()
    calls = Collector()
    receiver = conn.receiver("svc")
    policy = he.RetryPolicy(max_retries=2, initial_delay=0.01, in_place=True)

    @receiver.subscribe("c", action="a", retry=policy)
    async def fail(ctx: he.Context, msg: he.Message[Any]) -> None:
        calls.add(msg.attempt)
        raise RuntimeError("no")

    async with receiver:
        sealed = conn.emitter().seal(he.Event("c", "k", {}))
        headers = {**sealed.headers, env.ROOT_ACTION: b"a", env.ATTEMPT: attempt}
        await conn.publish([he.RawRecord("c", "k", headers, sealed.body)])
        await eventually(
            lambda: receiver.health()["actions"]["a"]["dead_lettered"] == 1,
            within=10,
            what="dead letter",
        )
    assert calls.items == [1, 2, 3]


@pytest.mark.parametrize(
    "name", ["HEXA_RETRY_AT", "HEXA_ATTEMPT", "_ctx_user", "_payload_encoder", "ce_id"]
)
def test_reserved_header_names_are_refused_at_emit(name: str) -> None:
    emitter = memory().emitter()
    with pytest.raises(InvalidEventError, match="reserved"):
        emitter.seal(he.Event("c", "k", {}, headers={name: "1" * 20}))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_delay": float("nan")},
        {"initial_delay": float("inf")},
        {"coefficient": float("nan")},
        {"max_delay": float("inf")},
        {"initial_delay": -1},
        {"max_retries": -1},
        {"max_retries": 10**400},
        {"max_retries": True},
    ],
)
def test_retry_policy_refuses_absurd_numbers(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        he.RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"drain_timeout": 10**400}, "an integer of 401 digits"),
        ({"stall_timeout": 10**400}, "an integer of 401 digits"),
        ({"lag_interval": 1e300}, "1e+300"),
        ({"concurrency": 10**400}, "an integer of 401 digits"),
        ({"concurrency": 10_001}, "10001"),
    ],
)
def test_receiver_refuses_absurd_numbers(kwargs: dict[str, Any], shown: str) -> None:
    """Before, a 400-digit timeout raised OverflowError once the receiver ran, and a
    400-digit concurrency left the receiver handling nothing."""
    with pytest.raises(ConfigurationError, match="Receiver") as caught:
        memory().receiver("svc", **kwargs)
    assert str(caught.value).endswith(f"got {shown}")


def test_subscribe_refuses_an_absurd_concurrency() -> None:
    receiver = memory().receiver("svc")
    with pytest.raises(ConfigurationError, match=r"subscribe\(\) concurrency .* to 10000"):
        receiver.subscribe("c", action="a", handler=lambda c, m: None, concurrency=10**400)


def test_retry_delay_never_overflows() -> None:
    policy = he.RetryPolicy(max_retries=1000, initial_delay=1e6, coefficient=1e6, max_delay=5)
    assert policy.delay(1000) == 5


@pytest.mark.parametrize("value", [float("nan"), {"x": [float("-inf")]}, b"raw bytes"])
def test_json_codec_refuses_what_it_would_change(value: Any) -> None:
    with pytest.raises(EncodeError):
        he.get_codec("json").encode(value)


async def test_memory_groups_never_share_a_headers_dict() -> None:
    conn = memory()
    seen = Collector()
    receiver = conn.receiver("svc")

    @receiver.subscribe("c", action="mutates")
    async def mutate(ctx: he.Context, msg: he.Message[Any]) -> None:
        msg.headers["x-added"] = b"by mutates"  # type: ignore[index]

    receiver.subscribe("c", action="reads", handler=lambda c, m: seen.add(dict(m.headers)))
    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        [headers] = await seen.wait_for(1, within=5)
    assert "x-added" not in headers


async def test_timed_out_sync_handler_never_overlaps_the_next_attempt() -> None:
    """he.timeout around a sync handler: the next attempt of the key starts only after the
    thread of the previous one ended."""
    conn = memory()
    running = 0
    overlaps = 0
    lock = threading.Lock()
    runs = Collector()
    loop = asyncio.get_running_loop()

    def slow(ctx: he.Context, msg: he.Message[Any]) -> None:
        nonlocal running, overlaps
        with lock:
            running += 1
            overlaps += running > 1
        time.sleep(0.5)
        with lock:
            running -= 1
        loop.call_soon_threadsafe(runs.add, msg.attempt)

    receiver = conn.receiver("svc", middlewares=[he.timeout(0.1)])
    policy = he.RetryPolicy(max_retries=2, initial_delay=0, in_place=True)
    receiver.subscribe("c", action="a", retry=policy, handler=slow)
    async with receiver:
        await conn.emitter().emit(he.Event("c", "k", {}))
        await runs.wait_for(3, within=15)
    assert overlaps == 0


def test_hung_sync_handler_does_not_keep_the_process_alive(tmp_path: Any) -> None:
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, threading
            import hexa_event as he

            async def main():
                conn = he.connect("memory://hang")
                receiver = conn.receiver("svc", drain_timeout=0.2)
                started = threading.Event()
                def hang(ctx, msg):
                    started.set()
                    threading.Event().wait()
                receiver.subscribe("c", action="a", handler=hang)
                async with receiver:
                    await conn.emitter().emit(he.Event("c", "k", {}))
                    while not started.is_set():
                        await asyncio.sleep(0.01)
                print("closed", flush=True)

            asyncio.run(main())
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout


async def test_nack_refuses_absurd_delays() -> None:
    delivery = he.Delivery(he.RawRecord("c", "k", {}, b""), coordinates="c-0-0")
    for delay in (float("nan"), float("inf"), -1):
        with pytest.raises(ConfigurationError):
            delivery.nack(delay)
    assert delivery.outcome is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0, -1])
def test_sql_intervals_are_refused_at_connect_not_at_start(value: float, tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        he.connect(f"sqlite:///{tmp_path / 'x.db'}", lease_ttl=value)
