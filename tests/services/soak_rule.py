"""The soak's pass rule, fixed before the run (docs/soak.md, "The rule").

The samples taken before ``warmup`` seconds are the warm-up; the rest is the measured
window. The soak passes when every check below holds:

- **RSS slope**: the least-squares slope of RSS over the measured window is at most
  ``rss_slope_mib_per_hour``.
- **RSS shift**: the median RSS of the measured window's last ``median_window`` seconds is
  at most ``rss_shift_mib`` above the median of its first ``median_window`` seconds.
- **fds, threads, tasks**: the maximum after warm-up is at most the maximum during warm-up
  plus ``fds_margin`` / ``threads_margin`` / ``tasks_margin``.
- **backlog**: the backlog (emitted minus first handler runs) never exceeds
  ``backlog_seconds`` seconds of the target rate after warm-up, and every emitted event
  was handled by the end.
- **load**: at least ``min_rate_share`` of the target rate was emitted, at most
  ``max_emit_error_share`` of the emit calls failed, and every engine ran retries and dead
  letters (and relayed its outbox rows when it had an outbox).

No exemption for steps: a step (a buffer filled during a broker outage) counts against the
slope and the shift like anything else.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class _Sample(Protocol):
    t: float
    rss_mib: float
    fds: int
    tasks: int
    threads: int
    backlog: int


@dataclass(frozen=True)
class Rule:
    warmup: float = 1200.0
    """Seconds; the 60-minute soak warms up for 20 minutes (10 in its first run, whose RSS
    crept for about 30)."""
    rss_slope_mib_per_hour: float = 10.0
    rss_shift_mib: float = 6.0
    median_window: float = 600.0
    fds_margin: int = 4
    threads_margin: int = 2
    tasks_margin: int = 50
    backlog_seconds: float = 30.0
    min_rate_share: float = 0.9
    max_emit_error_share: float = 0.001

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SOAK_60 = Rule()
"""The rule of the 60-minute soak on dedicated brokers at 600 events/s (``make soak``),
committed before it ran (docs/soak.md, "The rule")."""


@dataclass
class Check:
    name: str
    value: float
    limit: float
    ok: bool

    def __str__(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'} {self.name}: {self.value:g} (limit {self.limit:g})"


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, per hour."""
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def judge_samples(rule: Rule, samples: list[_Sample], rate_target: float) -> list[Check]:
    """The sample checks of ``rule`` (RSS slope and shift, fds, threads, tasks, backlog)."""
    warm = [s for s in samples if s.t < rule.warmup]
    measured = [s for s in samples if s.t >= rule.warmup]
    if len(warm) < 2 or len(measured) < 6:
        return [Check("enough samples after warm-up", len(measured), 6, False)]
    checks = []
    rss = [(s.t, s.rss_mib) for s in measured]
    slope = slope_per_hour(rss)
    checks.append(
        Check(
            "RSS slope MiB/h",
            round(slope, 2),
            rule.rss_slope_mib_per_hour,
            slope <= rule.rss_slope_mib_per_hour,
        )
    )
    first_end = measured[0].t + rule.median_window
    last_start = measured[-1].t - rule.median_window
    first = statistics.median(s.rss_mib for s in measured if s.t <= first_end)
    last = statistics.median(s.rss_mib for s in measured if s.t >= last_start)
    checks.append(
        Check(
            "RSS last-window median minus first-window median MiB",
            round(last - first, 2),
            rule.rss_shift_mib,
            last - first <= rule.rss_shift_mib,
        )
    )
    for name, margin in (
        ("fds", rule.fds_margin),
        ("threads", rule.threads_margin),
        ("tasks", rule.tasks_margin),
    ):
        before = max(getattr(s, name) for s in warm)
        after = max(getattr(s, name) for s in measured)
        checks.append(
            Check(
                f"max {name} after warm-up (warm-up max {before})",
                after,
                before + margin,
                after <= before + margin,
            )
        )
    backlog = max(s.backlog for s in measured)
    limit = rule.backlog_seconds * rate_target
    checks.append(Check("max backlog after warm-up", backlog, limit, backlog <= limit))
    return checks
