"""Instructions per event of ``_kafka_batch_loop.py`` (a Kafka batch handler's event-loop
work, no broker) under callgrind, and where they go by C function, for one tree or side by
side for several (A/B). Run by hand (not part of ``make bench``; needs valgrind):

    python benchmarks/_kafka_batch_callgrind.py [--tree DIR ...] [--top 40] [--keep DIR]

Per tree, four runs with ``PYTHONHASHSEED=0`` and the tree's ``src`` first on the path:
40,000 and 10,000 events, and the building of their messages alone (``--build-only``). The
events' instructions are ``(run 40k - run 10k) - (build 40k - build 10k)`` over 30,000: the
start, the imports and the building cancel out. The same subtraction of
``callgrind_annotate``'s self counts gives each C function's share per event (the
interpreter's own loop stands for all Python code; ``--profile`` of the loop harness
tells the Python functions apart). Counts are deterministic: one run per tree is enough,
whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIG, SMALL = 40_000, 10_000
_LINE = re.compile(r"\s*([\d,]+)\s+\([^)]*\)\s+(.+)$")
_NOISE = re.compile(r"/tmp/python-build[^ ]*?/Python-[\d.]+/|\s*\[[^]]*\]")
"""Build paths and the ``[object file]`` suffix: function names read alike across runs."""


def _callgrind(tree: Path, count: int, build_only: bool, out: Path) -> Counter[str]:
    """Self instructions by function of one run of the loop harness."""
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(HERE / "_kafka_batch_loop.py"),
        "--rounds",
        "1",
        "--count",
        str(count),
        *(["--build-only"] if build_only else []),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree / "src")}
    subprocess.run(command, env=env, check=True, capture_output=True)
    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    counts: Counter[str] = Counter()
    for line in annotated.splitlines():
        found = _LINE.match(line)
        if found is not None:
            name = _NOISE.sub("", found.group(2)).strip()
            counts[name] += int(found.group(1).replace(",", ""))
    return counts


def per_event(tree: Path, keep: Path) -> dict[str, float]:
    """Instructions per event by function (``PROGRAM TOTALS``: all of them)."""
    runs = {
        (count, build): _callgrind(tree, count, build, keep / f"{tree.name}-{count}-{build}.out")
        for count in (BIG, SMALL)
        for build in (False, True)
    }
    names = set().union(*runs.values())
    return {
        name: (
            runs[BIG, False][name]
            - runs[SMALL, False][name]
            - (runs[BIG, True][name] - runs[SMALL, True][name])
        )
        / (BIG - SMALL)
        for name in names
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", help="a worktree whose src to run (A/B)")
    parser.add_argument("--top", type=int, default=40, help="functions listed")
    parser.add_argument("--keep", help="a directory to keep callgrind's files in")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.tree or [HERE.parent]]
    keep = Path(args.keep or tempfile.mkdtemp(prefix="kafka-batch-callgrind-"))
    keep.mkdir(parents=True, exist_ok=True)
    results = []
    for tree in trees:
        results.append(per_event(tree, keep))
        total = results[-1].get("PROGRAM TOTALS", 0.0)
        print(f"{tree}: {total:,.0f} instructions per event", flush=True)
    names = set().union(*results)
    ranked = sorted(names, key=lambda name: -max(abs(r.get(name, 0.0)) for r in results))
    header = "".join(f"{tree.name[-18:]:>20}" for tree in trees)
    print(f"\ninstructions per event by function (files in {keep}):\n{header}  function")
    for name in ranked[: args.top + 1]:
        cells = "".join(f"{r.get(name, 0.0):20,.0f}" for r in results)
        print(f"{cells}  {name[:110]}")


if __name__ == "__main__":
    main()
