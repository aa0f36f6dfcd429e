"""CPU per event of ``pulsar_bench.py``'s emit paths (the client process, every thread,
pulsar-client's included; the broker's is not counted): ``time.process_time`` of the whole
run, connecting and closing included (``_pulsar_threads.py emit|raw_emit`` gives the timed
part alone, per thread), or with ``--callgrind`` instructions per event (the difference of a run of
``--count`` events and one of a fifth of them, so the start costs cancel: load-independent).
Each run is a fresh process; rounds alternate the trees given (``--tree``, a checkout's
``src``) and the medians are printed. Run by hand (not part of ``make bench``):

    python benchmarks/_pulsar_emit_cpu.py --tree ../old/src --tree src \\
        [--paths raw_emit,emit,standin] [--count 20000] [--rounds 5] [--callgrind]

``standin`` needs no broker: ``emit``'s events through ``emit_many`` with the binding's
``send_async`` replaced by a stand-in that confirms each message at once (the messages are
built as for the broker), so only our code and the message building are counted; under
``--callgrind`` the figure is deterministic.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from typing import Any

from _harness import run_child, tree_cli

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ("raw_emit", "emit")


async def _standin(count: int) -> float:
    """``pulsar_bench.ours_emit`` against a stand-in ``send_async`` (no broker)."""
    import pulsar
    import pulsar_bench as pb

    import hexa_event as he

    topic = "emit-standin"
    ok = pulsar.Result.Ok
    connection = he.connect(pb.URL)
    connection.driver.channels[topic] = 0  # type: ignore[attr-defined]  # provisioned

    def send_async(message: object, callback: Any) -> None:
        callback(ok, None)

    connection.driver._producers._senders[topic] = send_async  # type: ignore[attr-defined]
    emitter = connection.emitter()
    began = time.perf_counter()
    await pb.emit_all(emitter, topic, count)
    elapsed = time.perf_counter() - began
    await connection.close()
    return count / elapsed


def _measure(path: str, count: int) -> dict[str, float]:
    import pulsar_bench as pb

    began = time.process_time()
    if path == "raw_emit":
        rate = pb.raw_emit_callback_sync(count)
    elif path == "emit":
        rate = asyncio.run(pb.ours_emit(count))
    elif path == "standin":
        rate = asyncio.run(_standin(count))
    else:
        raise SystemExit(f"unknown path {path!r}")
    # Start and close are in the process time too: the rate's share is what is timed.
    cpu = time.process_time() - began
    return {"us": cpu / count * 1e6, "rate": rate}


def _run(tree: str, path: str, count: int, valgrind: str | None = None) -> dict[str, Any]:
    return run_child(__file__, tree, ["--child", path, "--count", str(count)], valgrind)


def main() -> None:
    args = tree_cli(__doc__.splitlines()[0], PATHS).parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.count)))
        return
    trees = [os.path.abspath(t) for t in args.tree] or [os.path.join(HERE, "..", "src")]
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for path in args.paths.split(","):
            for tree in trees:
                if args.callgrind:
                    small, big = args.count // 5, args.count
                    out = f"/tmp/pulsar-emit-cpu-{os.getpid()}.out"
                    a = _run(tree, path, small, out)["instructions"]
                    b = _run(tree, path, big, out)["instructions"]
                    figure = (b - a) / (big - small)
                else:
                    figure = _run(tree, path, args.count)["us"]
                figures.setdefault((path, tree), []).append(figure)
    print(f"load average: {os.getloadavg()}")
    unit = "instructions/event" if args.callgrind else "µs CPU/event (whole run)"
    for (path, tree), values in figures.items():
        print(
            f"{path:<9} {tree[-30:]:<30} {statistics.median(values):11.2f} {unit} "
            f"(min {min(values):.2f} max {max(values):.2f})"
        )


if __name__ == "__main__":
    main()
