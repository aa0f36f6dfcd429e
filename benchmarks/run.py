"""Runs every benchmark here, then writes docs/bench.json, docs/bench.png and the table of
docs/performance.md.

    python benchmarks/run.py [--only NAME ...] [--rounds N | --quick] [--no-table]

Every ``*.py`` in this folder except this runner, ``profile.py``, ``floor.py`` and the ``_``
helpers is a benchmark: it accepts ``--json PATH`` (and ``--rounds``) and writes one result
object or a list of them (see ``_harness.row``). A benchmark whose service is down is skipped with a
note: the services a script needs are its module-level ``SERVICES`` tuple, or else the
service names in its file name (``pulsar_bench.py`` needs pulsar); a service is up when
``scripts/services status`` says it is ready (or, for an address set in the environment,
when its port answers). ``make bench`` starts kafka and postgres, not the others.

The results of this run are merged into ``docs/bench.json`` (results of scripts skipped,
failed or left out with ``--only`` are kept from the earlier run and marked as such); the
chart (``docs/bench.png``, drawn by ``_chart.py`` in the benchmarks' own venv) and the
table of ``docs/performance.md`` between ``<!-- bench:start -->`` and ``<!-- bench:end -->``
are generated from it. Nothing in that table is written by hand.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUMMARY = ROOT / "docs" / "bench.json"
CHART = ROOT / "docs" / "bench.png"
TABLE_PAGE = ROOT / "docs" / "performance.md"
"""The page whose table between the markers is regenerated (the chart sits beside it)."""
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
NOT_BENCHMARKS = {"run.py", "profile.py", "floor.py", "outbox_steps.py"}  # breakdowns, not rows
SCRIPT_TIMEOUT = 900

# Where each service listens (the same variables the tests read), for the "is it up" check.
SERVICE_URLS = {
    "kafka": ("HEXA_KAFKA_BOOTSTRAP", "kafka://127.0.0.1:9092"),
    "pulsar": ("HEXA_PULSAR_URL", "pulsar://127.0.0.1:6650"),
    "nats": ("HEXA_NATS_URL", "nats://127.0.0.1:4222"),
    "stan": ("HEXA_STAN_URL", "nats://127.0.0.1:4223"),
    "postgres": ("HEXA_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/hexa_event"),
}


def scripts(only: list[str]) -> list[Path]:
    found = sorted(
        p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name not in NOT_BENCHMARKS
    )
    return [p for p in found if not only or p.stem in only]


def services_of(script: Path) -> tuple[str, ...]:
    """The script's ``SERVICES = (...)`` literal, else the service names in its file name."""
    tree = ast.parse(script.read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "SERVICES" for t in node.targets)
            and isinstance(node.value, ast.Tuple | ast.List)
        ):
            return tuple(ast.literal_eval(node.value))
    return tuple(name for name in script.stem.split("_") if name in SERVICE_URLS)


def service_up(name: str) -> bool:
    """Ready by ``scripts/services status`` for the project's own services; for an address
    given in the environment (or without the script), its port answers."""
    variable, default = SERVICE_URLS[name]
    if variable not in os.environ and (ROOT / "scripts" / "services").exists():
        try:
            status = subprocess.run(
                [str(ROOT / "scripts" / "services"), "status", name],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            status = None
        if status is not None and status.returncode == 0:
            return any(line.split()[:2] == [name, "ready"] for line in status.stdout.splitlines())
    url = os.environ.get(variable, default)
    parts = urlsplit(url if "://" in url else f"kafka://{url.split(',')[0]}")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2):
            return True
    except OSError:
        return False


def run_script(script: Path, rounds: int | None) -> tuple[list[dict[str, Any]], str]:
    """Run one benchmark; return its result objects and, when it failed, why."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(script), "--json", out.name]
        if rounds:
            command += ["--rounds", str(rounds)]
        began = time.perf_counter()
        try:
            code = subprocess.run(command, cwd=HERE, timeout=SCRIPT_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            return [], f"timed out after {SCRIPT_TIMEOUT} s"
        print(f"== {script.name}: {time.perf_counter() - began:.0f} s", flush=True)
        text = Path(out.name).read_text()
        data = json.loads(text) if text.strip() else []
        rows = data if isinstance(data, list) else [data]
        if code == 0:
            return rows, ""
        return rows, f"exited with {code}" + (" after writing its results" if rows else "")


def merge(
    previous: list[dict[str, Any]], fresh: dict[str, list[dict[str, Any]]], notes: dict[str, str]
) -> list[dict[str, Any]]:
    """This run's rows per script; a script not (successfully) run keeps its earlier rows."""
    merged: list[dict[str, Any]] = []
    scripts_seen: list[str] = []
    for r in previous:
        if r["script"] not in scripts_seen:
            scripts_seen.append(r["script"])
    for name in fresh:
        if name not in scripts_seen:
            scripts_seen.append(name)
    for name in scripts_seen:
        if fresh.get(name):
            merged.extend(fresh[name])
        else:
            for r in previous:
                if r["script"] == name:
                    merged.append({**r, "stale": notes.get(name, "not run")})
    return merged


# -- rendering ----------------------------------------------------------------------------


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:,.0f}/s"


def ratio_text(r: dict[str, Any]) -> str:
    ratio = r.get("ratio")
    if ratio is None:
        return "—"
    return f"{ratio:.2f}"


def main_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| benchmark (`benchmarks/`) | reference, same run | reference | hexa-event | ratio "
        "| target |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("group") in ("clients",) or r.get("peer"):
            continue
        unit = r.get("unit", "events/s")
        name = f"{r['benchmark']} (`{r['script']}`)"
        if r.get("stale"):
            name += " †"
        lines.append(
            f"| {name} | {r['reference']['name']} | {figure(r['reference']['median'], unit)} "
            f"| {figure(r['ours']['median'], unit)} | {ratio_text(r)} | {r.get('target') or ''} |"
        )
    return lines


def faststream_section(rows: list[dict[str, Any]]) -> list[str]:
    peers = [r for r in rows if r.get("peer")]
    base = next((r for r in rows if r.get("group") == "faststream" and not r.get("peer")), None)
    start = next((r for r in rows if r.get("group") == "start"), None)
    if not peers or base is None:
        return []
    raw = base["reference"]["median"]
    ours = base["ours"]["median"]
    lines = [
        "",
        f"Against FastStream (`faststream_kafka.py`, {base['count']:,} events of 200 bytes, "
        "typed decode, commit after handling, same topic, rounds alternating):",
        "",
        "| consumer | at-least-once | events/s | of raw | hexa-event / it |",
        "|---|---|---|---|---|",
        f"| {base['reference']['name']} | yes | {figure(raw, '')} | 1.00 | {ratio_text(base)} |",
        f"| **hexa-event receiver** | yes | **{figure(ours, '')}** | "
        f"{ours / raw if ours and raw else 0:.2f} | 1.00 |"
        if ours
        else f"| hexa-event receiver | yes | not run: {base.get('error') or '?'} | | |",
    ]
    for r in sorted(peers, key=lambda r: -(r["reference"]["median"] or 0)):
        peer_rate = r["reference"]["median"]
        lines.append(
            f"| {r['peer']} | {'yes' if r.get('at_least_once') else 'no'} "
            f"| {figure(peer_rate, '')} "
            f"| {f'{peer_rate / raw:.2f}' if peer_rate and raw else '—'} | {ratio_text(r)} |"
        )
    best = [r for r in peers if r.get("at_least_once") and r["reference"]["median"]]
    if best and ours:
        top = max(best, key=lambda r: r["reference"]["median"])
        lines += [
            "",
            f"hexa-event's receiver ran at {ours / raw:.2f} of raw confluent-kafka and "
            f"{ours / top['reference']['median']:.2f} times FastStream's fastest at-least-once "
            f"setting ({top['peer']}) in the same run.",
        ]
    if start and start["reference"]["median"] is not None:
        peers_start = ", ".join(
            f"{name.removeprefix('FastStream ')} {seconds:.3f} s"
            for name, seconds in sorted(start.get("all_peers", {}).items(), key=lambda kv: kv[1])
        )
        ours_start = start["ours"]["median"]
        lines += [
            "",
            "Start to first handled event (topic pre-filled, new group): hexa-event "
            f"{figure(ours_start, 's') if ours_start is not None else 'not run'}; "
            f"FastStream {peers_start}.",
        ]
    return lines


def clients_section(rows: list[dict[str, Any]]) -> list[str]:
    clients = [r for r in rows if r.get("group") == "clients"]
    if not clients:
        return []
    parts = [
        f"{r['benchmark']}: {r['reference']['name']} {figure(r['reference']['median'], '')}, "
        f"{r['ours']['name']} {figure(r['ours']['median'], '')}"
        for r in clients
    ]
    return ["", f"Client choice (`{clients[0]['script']}`, same run): " + "; ".join(parts) + "."]


def render(summary: dict[str, Any]) -> str:
    rows = summary["results"]
    lines = [
        f"Measured {summary['measured']} on {summary['machine']}; medians of alternating "
        "rounds, ratio = hexa-event / reference in the same run (for times: reference / "
        "hexa-event, so above 1 is better either way).",
        "",
        *main_table(rows),
    ]
    stale: dict[str, list[str]] = {}
    for r in rows:
        if r.get("stale"):
            why = f"{r['stale']}; figures of {r.get('measured', 'an earlier run')}"
            if f"`{r['script']}`" not in stale.setdefault(why, []):
                stale[why].append(f"`{r['script']}`")
    for why, names in stale.items():
        lines += ["", f"† {', '.join(names)} not measured in the latest run ({why})."]
    lines += faststream_section(rows)
    lines += clients_section(rows)
    failed = [r for r in rows if r.get("error") and not r.get("stale")]
    for r in failed:
        lines.append(f"\n`{r['script']}`, {r['benchmark']}: {r['error']}")
    lines += ["", f"![throughput against raw clients and FastStream]({CHART.name})"]
    return "\n".join(lines)


def update_table(text: str) -> bool:
    page = TABLE_PAGE.read_text()
    name = TABLE_PAGE.relative_to(ROOT)
    if START not in page or END not in page:
        print(f"{name} has no {START} ... {END} markers: table not written", file=sys.stderr)
        return False
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    TABLE_PAGE.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return True


def draw_chart() -> None:
    sys.path.insert(0, str(HERE))
    from _benchvenv import python

    subprocess.run(
        [str(python()), str(HERE / "_chart.py"), str(SUMMARY), str(CHART)], check=True, cwd=HERE
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[])
    parser.add_argument("--rounds", type=int, help="rounds for every script (default: theirs)")
    parser.add_argument("--quick", action="store_true", help="same as --rounds 3")
    parser.add_argument(
        "--no-table",
        "--no-readme",
        dest="no_table",
        action="store_true",
        help="leave docs/performance.md alone",
    )
    parser.add_argument("--no-chart", action="store_true", help="leave docs/bench.png alone")
    parser.add_argument(
        "--render-only", action="store_true", help="no benchmark: redraw from docs/bench.json"
    )
    args = parser.parse_args()
    previous: dict[str, Any] = (
        json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {"results": []}
    )
    fresh: dict[str, list[dict[str, Any]]] = {}
    notes: dict[str, str] = {}
    failed: list[str] = []
    began = time.perf_counter()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for script in [] if args.render_only else scripts(args.only):
        down = [name for name in services_of(script) if not service_up(name)]
        if down:
            notes[script.name] = f"skipped: {', '.join(down)} not ready"
            print(f"== {script.name}: {notes[script.name]}", flush=True)
            continue
        print(f"== {script.name}", flush=True)
        rows, problem = run_script(script, 3 if args.quick else args.rounds)
        for r in rows:
            r["script"] = script.name
            r["measured"] = now
        fresh[script.name] = rows
        if problem:
            failed.append(f"{script.name} ({problem})")
            notes[script.name] = problem
    if args.render_only:
        summary = previous
    else:
        summary = {
            "measured": now,
            "machine": _machine(),
            "results": merge(previous["results"], fresh, notes),
            "notes": notes,
        }
        SUMMARY.parent.mkdir(exist_ok=True)
        SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    text = render(summary)
    print("\n" + text)
    if not args.no_table and update_table(text):
        print(
            f"\n{TABLE_PAGE.relative_to(ROOT)} table regenerated from {SUMMARY.relative_to(ROOT)}"
        )
    if not args.no_chart:
        draw_chart()
        print(f"chart: {CHART.relative_to(ROOT)}")
    print(f"\nall benchmarks: {time.perf_counter() - began:.0f} s")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _machine() -> str:
    sys.path.insert(0, str(HERE))
    from _harness import machine

    return machine()


if __name__ == "__main__":
    sys.exit(main())
