"""FastStream against hexa-event and raw confluent-kafka on Kafka: consume, decode, commit.

The same work for everyone: a topic (3 partitions, 64 keys) pre-filled with N events of a
200-byte JSON body (sealed by our envelope, so the records carry our headers; FastStream
reads the same records), a new consumer group reading from the start, each body decoded into
a typed object, the offset committed after handling. Timed from the first handled event to
the last; the time from start to the first handled event is measured in the same runs.

- raw: confluent-kafka ``consume(500)``, msgspec decode into a dataclass, ``store_offsets``
  per batch (librdkafka commits in the background). In process.
- hexa-event: a receiver (``concurrency=256``) whose handler takes the decoded dataclass
  and returns (ack, commit of settled ranges). In process.
- FastStream 0.7.8 (``_faststream_side.py``), aiokafka and confluent flavours, each in its
  default (``ACK_FIRST``: auto-commit, not at-least-once), per-message ``AckPolicy.ACK``
  (at-least-once, a commit per message: run for a time budget) and batch subscriber of 500
  with manual ack (its fastest at-least-once setting; one commit per batch), each run in a
  subprocess of ``benchmarks/.bench-venv`` (installed on first use, never our dependency).

Rounds alternate raw, ours and every FastStream setting; medians are compared.

    python benchmarks/faststream_kafka.py [--count 50000] [--rounds 3] [--json out.json]
    # start to first handled event only, quickly:
    python benchmarks/faststream_kafka.py --count 2000 --rounds 5 \
        --settings aiokafka:default,confluent:default
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from _benchvenv import FASTSTREAM_VERSION, HERE, python
from _harness import Result, cli_parser, finish, machine, row
from _kafka import BOOTSTRAP, fill_sealed, raw_consume

import hexa_event as he

BODY_BYTES = 200
PER_MESSAGE_BUDGET = 3.0
"""Seconds the per-message commit modes run for (they handle a few hundred events/s)."""
RUN_TIMEOUT = 300.0
OURS_BUDGET = 30.0
"""Seconds a run of ours may take; a slower one reports its rate over what it handled."""


@dataclass(frozen=True)
class Setting:
    flavour: str
    mode: str

    @property
    def label(self) -> str:
        client = "aiokafka" if self.flavour == "aiokafka" else "confluent-kafka"
        how = {
            "default": "default (auto-commit)",
            "ack": "AckPolicy.ACK (commit per message)",
            "batch": "batch of 500 + manual ack",
        }[self.mode]
        return f"FastStream {client}, {how}"

    @property
    def at_least_once(self) -> bool:
        return self.mode != "default"


SETTINGS = tuple(
    Setting(flavour, mode)
    for flavour in ("aiokafka", "confluent")
    for mode in ("default", "batch", "ack")
)


@dataclass
class Order:
    n: int
    order_id: str
    customer: str
    sku: str
    quantity: int
    total: int
    currency: str
    status: str
    note: str


def order(n: int) -> Order:
    """An event whose JSON body is 200 bytes."""
    base = Order(
        n, f"ord-{n:08d}", f"cust-{n % 977:05d}", "SKU-1234-XL", 3, 4200, "EUR", "paid", ""
    )
    pad = BODY_BYTES - len(msgspec.json.encode(base))
    return Order(**{**base.__dict__, "note": "x" * max(pad, 0)})


def fill(count: int) -> str:
    """A fresh topic holding ``count`` events sealed by our envelope."""
    return fill_sealed("faststream", count, order)


async def raw(topic: str, count: int) -> dict[str, float]:
    decoder = msgspec.json.Decoder(Order)
    rate = await asyncio.to_thread(raw_consume, topic, count, decoder.decode)
    return {"rate": rate}


async def run_receiver(
    connection: he.Connection,
    receiver: he.Receiver,
    done: asyncio.Event,
    budget: float,
    handled: Callable[[], int],
) -> tuple[float, int]:
    """Start ``receiver``, wait for ``done`` at most ``budget`` seconds, then close it and
    ``connection``; returns when the start was called and ``handled()`` once the wait ended
    (before the close)."""
    began = time.perf_counter()
    try:
        await receiver.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), budget)
        return began, handled()
    finally:
        await receiver.close()
        await connection.close()


def faststream_ready() -> bool:
    """Whether the benchmarks' venv with FastStream is there (made now, before anything is
    timed, when it is not)."""
    try:
        python()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"-- FastStream not available, raw and ours only: {exc}", flush=True)
        return False
    return True


async def filled(count: int) -> str:
    """:func:`fill`, said on the output first."""
    print(f"-- filling a topic with {count:,} events of {BODY_BYTES} bytes", flush=True)
    return await asyncio.to_thread(fill, count)


async def ours(topic: str, count: int) -> dict[str, float]:
    """A hexa-event receiver: rate from first to last handled, and start to first handled."""
    connection = he.connect(f"kafka://{BOOTSTRAP}")
    receiver = connection.receiver("bench", concurrency=256)
    done = asyncio.Event()
    seen = 0
    first = last = 0.0

    @receiver.subscribe(topic, action=f"bench-fs-{uuid.uuid4().hex[:8]}", payload=Order)
    async def handle(ctx: he.Context, msg: he.Message[Order]) -> None:
        nonlocal seen, first, last
        last = time.perf_counter()
        if seen == 0:
            first = last
        seen += 1
        if seen == count:
            done.set()

    began, handled = await run_receiver(connection, receiver, done, OURS_BUDGET, lambda: seen)
    if handled < 2:
        raise RuntimeError(f"hexa-event handled {handled} events in {OURS_BUDGET} s")
    return {"rate": handled / (last - first), "start_to_first": first - began, "handled": handled}


async def faststream(
    setting: Setting, topic: str, count: int, *, tuned: bool = False
) -> dict[str, float]:
    """One FastStream run in a subprocess of the benchmarks' venv (``tuned``: with the
    collector tuned as ``hexa-event run`` tunes it, once imports are done)."""
    command = [
        str(python()),
        str(HERE / "_faststream_side.py"),
        f"--flavour={setting.flavour}",
        f"--mode={setting.mode}",
        f"--topic={topic}",
        f"--bootstrap={BOOTSTRAP}",
        f"--count={count}",
    ]
    if setting.mode == "ack":
        command.append(f"--budget={PER_MESSAGE_BUDGET}")
    if tuned:
        command.append("--tuned")
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{setting.label} exited {proc.returncode}: {' | '.join(tail)}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def parse() -> argparse.Namespace:
    parser = cli_parser(__doc__.splitlines()[0], 50_000, rounds=3)
    parser.add_argument("--skip-ours", action="store_true", help="FastStream and raw only")
    parser.add_argument(
        "--settings",
        default="",
        help="comma-separated flavour:mode subset, e.g. confluent:batch,aiokafka:default",
    )
    return parser.parse_args()


class Side:
    """One contender: its rates and start times over the rounds, and why it stopped."""

    def __init__(self, name: str) -> None:
        self.rate = Result(name)
        self.start = Result(name)
        self.handled: list[float] = []
        self.error = ""

    @property
    def median(self) -> float | None:
        """The median rate; None when it never ran."""
        return self.rate.median if self.rate.rates else None

    def add(self, run: dict[str, float]) -> None:
        self.rate.rates.append(run["rate"])
        if "start_to_first" in run:
            self.start.rates.append(run["start_to_first"])
        if "handled" in run:
            self.handled.append(run["handled"])


def ratios(side: Side, raw_side: Side, our_side: Side) -> tuple[str, str]:
    """The printed ratios of a side that ran: its median rate over raw's, and ours over its
    (each "-" where one of the two did not run; the second also for ours)."""
    median = side.rate.median
    vs_raw = f"{median / raw_side.median:.2f}" if raw_side.median else "-"
    ours_vs = f"{our_side.median / median:.2f}" if our_side.median and side is not our_side else "-"
    return vs_raw, ours_vs


async def attempt(side: Side, body: Any) -> None:
    if side.error:
        body.close()
        return
    began = time.perf_counter()
    try:
        run = await body
        side.add(run)
        print(
            f"  {side.rate.name:<62} {run['rate']:>9,.0f}/s  "
            f"start {run.get('start_to_first', float('nan')):.3f} s  "
            f"wall {time.perf_counter() - began:.1f} s",
            flush=True,
        )
    except Exception as exc:
        side.error = f"{type(exc).__name__}: {exc}"[:300]
        print(f"  {side.rate.name}: failed, not run again: {side.error}", flush=True)


async def main() -> None:
    args = parse()
    chosen = [s for s in SETTINGS if not args.settings or f"{s.flavour}:{s.mode}" in args.settings]
    if not faststream_ready():
        chosen = []
    topic = await filled(args.count)
    raw_side = Side("raw confluent-kafka consume+decode+store")
    our_side = Side("hexa-event receiver")
    peers = {s: Side(s.label) for s in chosen}
    for number in range(1, args.rounds + 1):
        began = time.perf_counter()
        await attempt(raw_side, raw(topic, args.count))
        if not args.skip_ours:
            await attempt(our_side, ours(topic, args.count))
        for setting, side in peers.items():
            await attempt(side, faststream(setting, topic, args.count))
        print(
            f"-- round {number}/{args.rounds} took {time.perf_counter() - began:.0f} s", flush=True
        )

    raw_rate = raw_side.median
    print(
        f"\nKafka consume, {BODY_BYTES}-byte JSON, typed decode, commit after handling "
        f"({args.count:,} events x {args.rounds} rounds, {machine()})"
    )
    print(f"  {'':<58} {'median/s':>10} {'min':>9} {'max':>9} {'/raw':>6} {'ours/it':>8}")
    for side in (raw_side, our_side, *peers.values()):
        if not side.rate.rates:
            print(f"  {side.rate.name:<58} {'not run':>10}  {side.error}")
            continue
        vs_raw, ours_vs = ratios(side, raw_side, our_side)
        print(
            f"  {side.rate.name:<58} {side.rate.median:>10,.0f} {min(side.rate.rates):>9,.0f} "
            f"{max(side.rate.rates):>9,.0f} {vs_raw:>6} {ours_vs:>8}"
        )
    print(
        "  (per-message ACK runs stop after", PER_MESSAGE_BUDGET, "s; rates over what they handled)"
    )
    print("\nStart to first handled event (topic pre-filled, new group), seconds:")
    for side in (our_side, *peers.values()):
        if side.start.rates:
            print(
                f"  {side.start.name:<58} median {side.start.median:.3f}  "
                f"(min {min(side.start.rates):.3f} max {max(side.start.rates):.3f})"
            )

    version = f"FastStream {FASTSTREAM_VERSION}"
    results: list[dict[str, object]] = [
        row(
            f"Kafka consume, {BODY_BYTES}-byte JSON, typed decode, commit after handling",
            args.count,
            raw_side.rate,
            our_side.rate,
            target=">= 0.5",
            group="faststream",
            error=our_side.error or raw_side.error,
        )
    ]
    for setting, side in peers.items():
        results.append(
            row(
                f"Kafka consume vs {version}, {setting.flavour}, {setting.mode}",
                args.count,
                side.rate,
                our_side.rate,
                group="faststream",
                peer=side.rate.name,
                at_least_once=setting.at_least_once,
                raw=raw_rate,
                ratio_to_raw=side.rate.median / raw_rate if side.rate.rates and raw_rate else None,
                error=side.error,
            )
        )
    starts = [side for side in peers.values() if side.start.rates]
    if starts:
        fastest = min(starts, key=lambda side: side.start.median)
        results.append(
            row(
                "Kafka receiver start to first handled event",
                args.count,
                fastest.start,
                our_side.start,
                unit="s",
                target="< 0.2 s",
                group="start",
                all_peers={side.start.name: statistics.median(side.start.rates) for side in starts},
            )
        )
    finish(results, args.json)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
