"""CPU time per event of the STAN paths of ``stan_bench.py`` (the client process's CPU,
every thread, ``time.process_time``; the streaming server's is not counted), so A/B runs
of driver changes say something on a shared machine where the rates swing 2x. Each run is
a fresh process; rounds alternate the trees given (``--tree``, a checkout's ``src``), and
the medians are printed. Run by hand (not part of ``make bench``):

    python benchmarks/_stan_cpu.py --tree ../stan-base/src --tree src \\
        [--paths raw_consume,consume,driver_consume,raw_emit,emit,publish] \\
        [--count 20000] [--rounds 5] [--rounds-table]

``--rounds-table`` prints every run as well: its rate, CPU per event, ``busy`` (the client's
CPU over the run's wall time: under 1 when it waited, or was preempted by another process,
``preempted`` counting those involuntary switches), the time to the first event handled
(consume paths: the joins), and for each ``consume`` run next to a ``raw_consume`` run of
the same round the two ratios, by rate and by CPU, that ``stan_bench.py``'s consume row
mixes (docs/performance.md, "STAN consume: why the ratio swings").
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import time
import uuid
from typing import Any

from _harness import run_child, tree_cli

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ("raw_consume", "consume", "driver_consume", "raw_emit", "emit", "publish")


async def _fill(count: int) -> str:
    import stan_bench as sb

    return await sb._backlog(count)


async def _measure(path: str, count: int, channel: str | None = None) -> dict[str, float]:
    import stan_bench as sb

    import hexa_event as he

    loop = asyncio.get_running_loop()
    span: list[float] = []
    switches: list[int] = []
    first: list[float] = []  # when the first event was handled (consume paths)

    def mark() -> None:
        span.extend((time.process_time(), loop.time()))
        switches.append(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)

    if path == "raw_emit":
        client = sb.RawStan()
        await client.open()
        bodies = sb.raw_bodies()
        mark()
        await client.publish_all(f"cpu-{uuid.uuid4().hex[:8]}", bodies, count)
        mark()
        await client.close()
    elif path == "raw_consume":
        channel = channel or await sb._backlog(count)
        client = sb.RawStan()
        await client.open()
        mark()
        await client.consume_all(channel, count)
        mark()
        first.append(client.first_at)
        await client.close()
    elif path == "emit":
        connection = he.connect(sb.STAN_URL)
        emitter = connection.emitter()
        channel = f"cpu-{uuid.uuid4().hex[:8]}"
        await emitter.emit(he.Event(channel, "warm", sb._payload(0)))
        mark()
        await sb.emit_all(emitter, channel, count)
        mark()
        await connection.close()
    elif path == "publish":
        connection = he.connect(sb.STAN_URL)
        records = sb.sealed_events(f"cpu-{uuid.uuid4().hex[:8]}", count)
        await connection.publish(records[:1])
        mark()
        await sb.publish_all(connection, records)
        mark()
        await connection.close()
    elif path == "consume":
        channel = channel or await sb._backlog(count)
        connection = he.connect(sb.STAN_URL)
        await connection.driver.connect()  # type: ignore[attr-defined]
        receiver = connection.receiver("bench")
        handled = 0
        done = loop.create_future()

        async def handle(ctx: he.Context, msg: he.Message[dict[str, Any]]) -> None:
            nonlocal handled
            handled += 1
            if handled == 1:
                first.append(loop.time())
            if handled == count and not done.done():
                done.set_result(None)

        receiver.subscribe(channel, action=f"cpu-{uuid.uuid4().hex[:6]}", handler=handle)
        mark()
        await receiver.start()
        await asyncio.wait_for(done, 300)
        mark()
        await receiver.close()
        await connection.close()
    elif path == "driver_consume":
        channel = channel or await sb._backlog(count)
        connection = he.connect(sb.STAN_URL)
        await connection.driver.connect()  # type: ignore[attr-defined]
        mark()
        subscription = await sb.fetch_all(connection, channel, count)
        mark()
        await subscription.close()
        await connection.close()
    else:
        raise SystemExit(f"unknown path {path!r}")
    cpu = span[2] - span[0]
    wall = span[3] - span[1]
    result = {"us": cpu / count * 1e6, "rate": count / wall, "busy": cpu / wall}
    result["preempted"] = switches[1] - switches[0]
    if first:
        result["first_ms"] = (first[0] - span[1]) * 1000
    return result


def _child(path: str, count: int, channel: str | None) -> None:
    gc.collect()
    if path == "fill":
        print(json.dumps({"channel": asyncio.run(_fill(count))}))
        return
    print(json.dumps(asyncio.run(_measure(path, count, channel))))


def _run(tree: str, *args: str, valgrind: str | None = None) -> dict[str, Any]:
    # three attempts: a run under callgrind on a loaded machine may time out
    return run_child(__file__, tree, args, valgrind, attempts=3)


def _callgrind(tree: str, path: str, small: int, big: int) -> float:
    """Instructions per event: the difference of two runs, ``big`` and ``small`` events."""
    totals = []
    for count in (small, big):
        args = ["--child", path, "--count", str(count)]
        if "consume" in path:
            channel = _run(tree, "--child", "fill", "--count", str(count))["channel"]
            args += ["--channel", channel]
        out = f"/tmp/stan-cpu-{os.getpid()}-{count}.out"
        totals.append(_run(tree, *args, valgrind=out)["instructions"])
    return (totals[1] - totals[0]) / (big - small)


def main() -> None:
    parser = tree_cli(__doc__.splitlines()[0], PATHS)
    parser.add_argument("--rounds-table", action="store_true", help="print every run too")
    parser.add_argument("--channel", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.count, args.channel)
        return
    trees = [os.path.abspath(t) for t in args.tree] or [os.path.join(HERE, "..", "src")]
    results: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    for number in range(args.rounds):
        runs: dict[tuple[str, str], dict[str, Any]] = {}
        for path in args.paths.split(","):
            for tree in trees:
                if args.callgrind:
                    figure = _callgrind(tree, path, args.count // 5, args.count)
                else:
                    child = ["--child", path, "--count", str(args.count)]
                    run = runs[path, tree] = _run(tree, *child)
                    figure = run["us"]
                    rates.setdefault((path, tree), []).append(run["rate"])
                results.setdefault((path, tree), []).append(figure)
        if args.rounds_table:
            _print_round(number, runs)
    print(f"load average: {os.getloadavg()}")
    unit = "instructions/event" if args.callgrind else "µs CPU/event"
    for (path, tree), figures in results.items():
        rate = rates.get((path, tree))
        print(
            f"{path:<15} {tree[-30:]:<30} {statistics.median(figures):9.2f} {unit} "
            f"(min {min(figures):.2f} max {max(figures):.2f})"
            + (f"; rate {statistics.median(rate):8,.0f}/s" if rate else "")
        )


def _print_round(number: int, runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    """One round's runs, and a consume run's ratios to the raw consume run of the round."""
    for (path, tree), run in runs.items():
        first = f"first event {run['first_ms']:5.1f} ms" if "first_ms" in run else ""
        line = (
            f"round {number + 1} {path:<15} {tree[-30:]:<30} {run['rate']:8,.0f}/s "
            f"{run['us']:6.2f} µs CPU/event busy {run['busy']:.2f} "
            f"preempted {run['preempted']:4.0f} {first}"
        )
        raw = next((r for (p, _), r in runs.items() if p == "raw_consume"), None)
        if path == "consume" and raw is not None:
            line += (
                f" | of raw: rate {run['rate'] / raw['rate']:.2f}, "
                f"CPU {raw['us'] / run['us']:.2f}, busy {run['busy'] / raw['busy']:.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
