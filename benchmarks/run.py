"""Runs every benchmark in this folder and prints the README's performance table.

    python benchmarks/run.py [--only NAME ...] [--quick]

Each benchmark script accepts ``--json PATH`` and writes one result object (or a list of
them) with the reference and our medians and the ratio; this runner collects them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(only: list[str]) -> list[Path]:
    found = sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run.py"
    )
    return [p for p in found if not only or p.stem in only]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 5")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    failed: list[str] = []
    for script in scripts(args.only):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            command = [sys.executable, str(script), "--json", out.name]
            if args.quick:
                command += ["--rounds", "3"]
            print(f"== {script.name}", flush=True)
            if subprocess.run(command, cwd=HERE).returncode != 0:
                failed.append(script.name)
                continue
            data = json.loads(Path(out.name).read_text() or "[]")
            rows.extend(data if isinstance(data, list) else [data])
    print("\n| benchmark | reference (same run) | reference | hexa-event | ratio |")
    print("|---|---|---|---|---|")
    for row in rows:
        ref, ours = row["reference"], row["ours"]
        assert isinstance(ref, dict) and isinstance(ours, dict)
        print(
            f"| {row['benchmark']} | {ref['name']} | {ref['median']:,.0f}/s "
            f"| {ours['median']:,.0f}/s | {row['ratio']:.2f} |"
        )
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
