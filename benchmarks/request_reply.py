"""Request/reply round trips and scheduled-event lateness on each engine.

For each engine: a responder (a receiver whose handler calls ``emitter.reply``) and one
requester; ``--count`` sequential requests after a warm-up, then the same number with up to
``--concurrency`` in flight; latencies are from ``request()`` called to reply returned. Then
``--scheduled`` events due 0..3 s ahead: how late each was handled after its due time.

    python benchmarks/request_reply.py [--engines memory,sqlite,kafka] [--count 300]
        [--rounds 3] [--json PATH]

``run.py`` (``make bench``) runs it like the others: one result row per engine whose
service answers (unit "s": the median over rounds of each round's sequential p50), with the
p99, the 64-in-flight figures and the scheduled lateness as extra fields. On Kafka and NATS
the reference is FastStream's ``broker.request()`` in the same run (``_faststream_request.py``
in the benchmarks' venv): on NATS it is core NATS request/reply (nothing stored); FastStream
0.7's Kafka broker has no ``request()`` outside its test client, which the row says.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _harness import Result, cli_parser, port_answers, row

import hexa_event as he

SERVICES: tuple[str, ...] = ()
"""None required: engines whose service does not answer are left out (see ``reachable``)."""

ENGINES = {
    "memory": lambda: f"memory://bench-{uuid.uuid4().hex}",
    "sqlite": lambda: f"sqlite:///{tempfile.mkdtemp()}/bench.db",
    "postgres": lambda: os.environ.get(
        "HEXA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/hexa_event"
    ),
    "kafka": lambda: "kafka://" + os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
    "pulsar": lambda: os.environ.get("HEXA_PULSAR_URL", "pulsar://127.0.0.1:6650"),
    "nats": lambda: os.environ.get("HEXA_NATS_URL", "nats://127.0.0.1:4222"),
    "stan": lambda: (
        "stan://"
        + os.environ.get("HEXA_STAN_URL", "nats://127.0.0.1:4223").split("://", 1)[1]
        + "?cluster_id="
        + os.environ.get("HEXA_STAN_CLUSTER_ID", "hexa-event")
    ),
}


def faststream(engine: str, url: str, count: int) -> Result:
    """FastStream's request() round trip p50 on ``engine`` (Kafka, NATS), or why not."""
    if engine not in ("kafka", "nats"):
        return Result("no peer measured")
    label = "FastStream request()" + (" (core NATS)" if engine == "nats" else "")
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _benchvenv import python

        done = subprocess.run(
            [
                str(python()),
                str(Path(__file__).with_name("_faststream_request.py")),
                "--broker",
                engine,
                "--url",
                url.removeprefix("kafka://"),
                "--count",
                str(count),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
    except Exception as exc:
        return Result(f"{label}: not run ({type(exc).__name__})")
    if "error" in result:
        return Result(f"{label}: {result['error']}")
    print(
        f"{'':<9} FastStream request(): p50 {1000 * result['p50']:.2f} ms, p99 "
        f"{1000 * result['p99']:.2f} ms"
    )
    return Result(label, [result["p50"]])


def reachable(url: str) -> bool:
    """Memory and SQLite always; a broker when its port answers within 2 s."""
    return url.startswith(("memory:", "sqlite:")) or port_answers(url)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    engine: str, url: str, count: int, concurrency: int, scheduled: int, rounds: int
) -> dict[str, Any]:
    conn = he.connect(url)
    tag = uuid.uuid4().hex[:8]
    channel, later = f"bench-rq-{tag}", f"bench-sched-{tag}"
    await conn.provision([channel, later])
    replier = conn.emitter()
    receiver = conn.receiver("bench", concurrency=128)

    @receiver.subscribe(channel, action=f"bench-answer-{tag}")
    async def answer(ctx: he.Context, msg: he.Message[Any]) -> None:
        await replier.reply(ctx, msg, {"n": msg.payload["n"]})

    late: list[float] = []
    done = asyncio.Event()

    @receiver.subscribe(later, action=f"bench-later-{tag}")
    async def handle(ctx: he.Context, msg: he.Message[Any]) -> None:
        raw = msg.headers.get(he.headers.DELIVER_AT)
        due = int(raw) / 1000 if raw else msg.payload["sent"]
        late.append(time.time() - due)
        if len(late) >= scheduled:
            done.set()

    emitter = conn.emitter()
    try:
        async with receiver:
            for n in range(5):
                await emitter.request(he.Event(channel, "warm", {"n": n}), timeout=60)
            sequential: list[float] = []
            p50s: list[float] = []
            for _ in range(rounds):
                this_round: list[float] = []
                for n in range(count):
                    began = time.perf_counter()
                    await emitter.request(he.Event(channel, f"k{n % 16}", {"n": n}), timeout=60)
                    this_round.append(time.perf_counter() - began)
                p50s.append(statistics.median(this_round))
                sequential += this_round
            gate = asyncio.Semaphore(concurrency)
            concurrent: list[float] = []

            async def one(n: int) -> None:
                async with gate:
                    began = time.perf_counter()
                    await emitter.request(he.Event(channel, f"k{n % 64}", {"n": n}), timeout=60)
                    concurrent.append(time.perf_counter() - began)

            began = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(count)))
            rate = count / (time.perf_counter() - began)
            sent = time.time()
            await emitter.emit_many(
                he.Event(later, f"k{n % 20}", {"sent": sent}, delay=3.0 * n / max(scheduled - 1, 1))
                for n in range(scheduled)
            )
            await asyncio.wait_for(done.wait(), 60)
    finally:
        await conn.close()
    return {
        "engine": engine,
        "p50s": p50s,
        "p50_ms": round(1000 * statistics.median(sequential), 2),
        "p99_ms": round(1000 * percentile(sequential, 0.99), 2),
        "concurrent_p50_ms": round(1000 * statistics.median(concurrent), 2),
        "concurrent_p99_ms": round(1000 * percentile(concurrent, 0.99), 2),
        "concurrent_per_s": round(rate),
        "scheduled_late_p50_ms": round(1000 * statistics.median(late), 1),
        "scheduled_late_max_ms": round(1000 * max(late), 1),
        "scheduled_early": sum(1 for x in late if x < 0),
    }


async def main() -> None:
    parser = cli_parser(__doc__, 300, rounds=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--scheduled", type=int, default=100)
    args = parser.parse_args()
    results = []
    rows = []
    print(
        f"{'engine':<9} {'p50 ms':>8} {'p99 ms':>8} {'c-p50':>8} {'c-p99':>8} {'req/s':>7} "
        f"{'late p50':>9} {'late max':>9}"
    )
    for engine in args.engines.split(","):
        url = ENGINES[engine]()
        if not reachable(url):
            print(f"{engine:<9} skipped: nothing answers at {urlsplit(url).netloc}")
            continue
        try:
            r = await measure(
                engine, url, args.count, args.concurrency, args.scheduled, args.rounds
            )
        except Exception as exc:
            print(f"{engine:<9} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        results.append(r)
        extra = {k: v for k, v in r.items() if k not in ("engine", "p50s")}
        rows.append(
            row(
                f"request/reply round trip p50, {engine}",
                args.count,
                await asyncio.to_thread(faststream, engine, url, args.count),
                Result("hexa-event request()", list(r["p50s"])),
                unit="s",
                group="requests",
                **extra,
            )
        )
        print(
            f"{engine:<9} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['concurrent_p50_ms']:>8} "
            f"{r['concurrent_p99_ms']:>8} {r['concurrent_per_s']:>7} "
            f"{r['scheduled_late_p50_ms']:>9} {r['scheduled_late_max_ms']:>9}",
            flush=True,
        )
    if args.json:
        text = json.dumps(rows, indent=2) + "\n"
        await asyncio.to_thread(Path(args.json).write_text, text)


if __name__ == "__main__":
    asyncio.run(main())
