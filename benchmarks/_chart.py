"""Draws docs/bench.png from docs/bench.json; runs in the benchmarks' venv (matplotlib).

Left: each benchmark's ratio hexa-event / raw reference (same run), with its target.
Right: Kafka consume with commit after handling, events/s: raw confluent-kafka, hexa-event
and FastStream's settings (hatched: not at-least-once).

    .bench-venv/bin/python _chart.py ../docs/bench.json ../docs/bench.png
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OURS = "#1f6feb"
RAW = "#8c959f"
PEER = "#e3913a"


def target_value(target: str | None) -> float | None:
    match = re.fullmatch(r"\s*>=\s*([0-9.]+)\s*", target or "")
    return float(match.group(1)) if match else None


def ratios(ax: Any, rows: list[dict[str, Any]]) -> None:
    shown = [
        r
        for r in rows
        if r.get("ratio") is not None
        and r.get("unit", "events/s") != "s"
        and r.get("group") != "clients"
        and not r.get("peer")
    ]
    labels = [textwrap.fill(r["benchmark"], 38) for r in shown]
    values = [r["ratio"] for r in shown]
    y = range(len(shown))
    for i, r in enumerate(shown):
        ax.barh(i, values[i], color=OURS, alpha=0.35 if r.get("stale") else 1.0)
        if r.get("stale"):
            labels[i] += "\n(earlier run)"
    for i, r in enumerate(shown):
        goal = target_value(r.get("target"))
        if goal is not None:
            ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(values[i] + 0.02, i, f"{values[i]:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, color=RAW, linestyle="--", linewidth=1)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("hexa-event / raw client, same run (black tick: target)")
    ax.set_title("Throughput against the raw clients", fontsize=10)


def kafka_consume(ax: Any, rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if r.get("group") == "faststream" and not r.get("peer")), None)
    peers = [r for r in rows if r.get("peer") and r["reference"]["median"]]
    if base is None:
        ax.set_axis_off()
        return
    bars: list[tuple[str, float, str, bool]] = []
    if base["reference"]["median"]:
        bars.append((base["reference"]["name"], base["reference"]["median"], RAW, True))
    if base["ours"]["median"]:
        bars.append(("hexa-event receiver", base["ours"]["median"], OURS, True))
    for r in sorted(peers, key=lambda r: -r["reference"]["median"]):
        bars.append((r["peer"], r["reference"]["median"], PEER, bool(r.get("at_least_once"))))
    y = list(range(len(bars)))
    for i, (_, value, colour, safe) in enumerate(bars):
        ax.barh(i, value, color=colour, hatch=None if safe else "//", edgecolor="white")
        ax.text(value, i, f" {value:,.0f}", va="center", fontsize=8)
    ax.set_yticks(y, [textwrap.fill(name, 34) for name, *_ in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=max(value for _, value, *_ in bars) * 4)  # room for the labels
    ax.set_xlabel("events/s (log scale; hatched: not at-least-once)")
    ax.set_title(
        f"Kafka consume, {base['count']:,} x 200-byte JSON, commit after handling", fontsize=10
    )


def main() -> None:
    summary = json.loads(Path(sys.argv[1]).read_text())
    rows = summary["results"]
    height = max(6.5, 0.32 * len(rows) + 1.5)  # one bar per benchmark on the left
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, height))
    ratios(left, rows)
    kafka_consume(right, rows)
    fig.suptitle(
        f"hexa-event for Python, `make bench` {summary.get('measured', '')}: "
        f"{summary.get('machine', '')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
