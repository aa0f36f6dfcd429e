"""``hexa-event run --workers 2`` against ``--workers 1``: does a second process double the rate?

For PostgreSQL (``HEXA_POSTGRES_URL``) and Kafka (``HEXA_KAFKA_BOOTSTRAP``, 4 partitions): a
fresh channel gets N events (distinct keys), then ``hexa-event run _workers_app:build
--workers W --http-port P`` drains them; each handler burns about 200 µs of CPU (a
CPU-bound service, where one process is capped by one core). The rate counts from the
moment every worker handles events (a Kafka group may still be settling when the first
one starts) to the moment the first worker runs out of work (see ``steady_rate``).
Rounds alternate between 1 and 2 workers. Target: 2 workers >= 1.8x on 2 cores (the brokers
run on the same 2 cores, so expect less here).

    python benchmarks/workers.py [--count 60000] [--rounds 3] [--backends postgresql,kafka]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from _harness import Result, cli_parser, finish, machine, row

import hexa_event as he

HERE = Path(__file__).resolve().parent
SERVICES = ("postgres", "kafka")
URLS = {
    "postgresql": os.environ.get(
        "HEXA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/hexa_event"
    ),
    "kafka": "kafka://" + os.environ.get("HEXA_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
}


async def fill(url: str, channel: str, count: int) -> None:
    conn = he.connect(url, **({"partitions": 4} if url.startswith("kafka") else {}))
    try:
        emitter = conn.emitter()
        for start in range(0, count, 1000):
            batch = range(start, min(start + 1000, count))
            await emitter.emit_many(
                [he.Event(channel=channel, key=f"k{n}", payload={"n": n}) for n in batch]
            )
    finally:
        await conn.close()


def _reports(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    out: dict[str, list[tuple[int, float, float]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            pid, handled, first, last = line.split()
            out.setdefault(pid, []).append((int(handled), float(first), float(last)))
    return out


def handled(path: Path) -> int:
    return sum(max(h for h, _, _ in lines) for lines in _reports(path).values())


def steady_rate(path: Path) -> float:
    """Events per second while every worker handles: from the moment the last worker
    handles its first event to the moment the first one runs out of work. A finite backlog
    ends unevenly (the worker that joined first drained part of its partitions before the
    group split them), and that tail, where one process works alone, measures the backlog's
    split, not what the processes reach together."""
    reports = _reports(path)
    began = max(first for lines in reports.values() for _, first, _ in lines if first)
    ended = min(max(last for _, _, last in lines) for lines in reports.values())
    if len(reports) == 1 or ended <= began:  # one worker: from its first to its last event
        ended = max(last for lines in reports.values() for _, _, last in lines)

    def count_at(moment: float) -> int:
        return sum(
            max((h for h, _, last in lines if last <= moment), default=0)
            for lines in reports.values()
        )

    return (count_at(ended) - count_at(began)) / (ended - began)


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env)


def ready(port: int) -> bool:
    """The worker's /readyz is 200 and it was assigned partitions (the group settled)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            body = json.loads(answer.read())
    except OSError:
        return False
    actions = [a for r in body["receivers"].values() for a in r["actions"].values()]
    return bool(actions) and all(a["assigned"] > 0 for a in actions)


def free_ports(count: int) -> int:
    """A port P with P .. P + count - 1 free (worker i serves its probes on P + i)."""
    while True:
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            others = [socket.socket() for _ in range(count - 1)]
            try:
                for n, other in enumerate(others, 1):
                    other.bind(("127.0.0.1", port + n))
                return port
            except OSError:
                continue
            finally:
                for other in others:
                    other.close()


async def one_round(url: str, workers: int, count: int) -> float:
    suffix = uuid.uuid4().hex[:8]
    channel, action = f"bench-w-{suffix}", f"bench-w-act-{suffix}"
    # The backlog is there before the workers start (the case an autoscaler adds workers
    # for), so the emitting client does not take CPU from the workers while they run.
    await fill(url, channel, count)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "progress"
        env = {
            **os.environ,
            "BENCH_URL": url,
            "BENCH_CHANNEL": channel,
            "BENCH_ACTION": action,
            "BENCH_PROGRESS": str(report),
            "HEXA_EVENT_LOG_LEVEL": "WARNING",
        }
        argv = [sys.executable, "-m", "hexa_event.cli", "run", "_workers_app:build"]
        port = free_ports(workers)
        argv += ["--app-dir", str(HERE), "--workers", str(workers)]
        argv += ["--http-port", str(port), "--http-host", "127.0.0.1"]
        process = start(argv, env)
        deadline = time.monotonic() + 600
        try:
            for worker in range(workers):
                while not await asyncio.to_thread(ready, port + worker):
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"--workers {workers}: worker {worker} never ready")
                    await asyncio.sleep(0.2)
            while handled(report) < count:  # each worker reports every 0.05 s
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"--workers {workers}: not every event was handled")
                await asyncio.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 120)
        done = handled(report)
        if done < count:
            raise RuntimeError(f"--workers {workers}: {done} of {count} handled")
        return steady_rate(report)


async def main() -> None:
    parser = cli_parser(__doc__, 60000, rounds=3)
    parser.add_argument("--backends", default="postgresql,kafka")
    args = parser.parse_args()
    rows = []
    for backend in args.backends.split(","):
        url = URLS[backend]
        one, two = Result("--workers 1"), Result("--workers 2")
        for _ in range(args.rounds):
            one.rates.append(await one_round(url, 1, args.count))
            two.rates.append(await one_round(url, 2, args.count))
        title = f"runner --workers 2 vs 1 on {backend}, 200 µs CPU per event (`workers.py`)"
        print(f"\n{title}  ({args.count} events x {args.rounds} rounds, {machine()})")
        for result in (one, two):
            print(f"  {result.name:<14} median {result.median:>10,.0f} events/s  {result.rates}")
        print(f"  ratio 2 workers / 1: {two.median / one.median:.2f}")
        rows.append(row(title, args.count, one, two, target=">= 1.8"))
    finish(rows, args.json)


if __name__ == "__main__":
    asyncio.run(main())
