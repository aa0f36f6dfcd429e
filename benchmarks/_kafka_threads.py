"""Where a Kafka consumer's time goes, per thread: raw confluent-kafka, the single receiver
and the batch handler, each run in a fresh process, alternating over rounds; medians printed.
Run by hand (not part of ``make bench``):

    HEXA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python benchmarks/_kafka_threads.py \
        [--kinds raw,receiver,batch] [--rounds 3] [--count 50000] [--tuned] [--stats] \
        [--tree DIR ...] [--switch-interval S ...] [--patch MODULE:NAME=VALUE ...] \
        [--json runs.jsonl]

The kinds: ``raw`` (``_kafka.raw_consume``'s loop: ``consume(500)``, typed decode,
``store_offsets``), ``receiver`` (``kafka_consume.py``'s ``ours``: concurrency 256, a
trivial handler) and ``batch`` (``kafka_batch.py``'s ``ours``: ``Batch(max_size=500)``).
The topics are filled first (``kafka_consume.fill``; ``faststream_kafka.fill`` for the
batch handler), outside the measurement; each run reads one from the start with a new
group, measured from the first handled event to the last. A/B: ``--tree`` (that worktree's
``src``), ``--switch-interval`` (``sys.setswitchinterval``) and ``--patch`` (a module
constant, ``none`` for a run without) are repeatable, and their combinations alternate
within each round. ``--tuned``: the collector tuned as ``hexa-event run`` tunes it.
``--stats``: librdkafka's statistics every 50 ms, for the records waiting in its fetch
queues (``fetchq_samples``).

Each run prints one line, µs per event unless said otherwise: the rate; process CPU; the
load average; the machine's busy cores (``/proc/stat``) and the broker JVM's CPU (10 ms
ticks: coarse); librdkafka's broker threads' CPU; then

- the event loop thread (``/proc/self/task/*``): CPU, time runnable waiting for a core
  (``schedstat``), idle in ``select`` with no record buffered in the driver (``idle_empty``:
  waiting for the consumer thread) + with records buffered (the window full, a batch's
  timer), and the rest of its wall time (``loop_rest``: waiting for the GIL);
- the member (the driver's consumer thread): CPU (and runnable), the time in
  ``consume``/``poll`` off its CPU (waiting for records, then for the GIL when the call
  returns; for calls that returned a full batch, ``full``, mostly the GIL: librdkafka's
  fetch queue held records), empty calls per 1,000 events, the same off time in its
  ``call_soon_threadsafe`` hand-overs (a socket write: the GIL given up and taken back) and
  its synchronous commits, its waits for room (backpressure) and their count per 1,000
  events, and the rest.

The medians table adds: calls and hand-overs per 1,000 events, records per consume call,
context switches per thread, where the member was when the loop went idle
(``idle_empty_member_*``), the retry group's member, and when the idle waits and empty
consume calls came (ms in each fifth of the run: the last fifth's empty calls are the
member having read the whole topic). Figures and conclusions: docs/performance.md, "Where
the Kafka receiver's rate is bound (session 38)".
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _harness import thread_times

HERE = Path(__file__).resolve().parent
KINDS = ("raw", "receiver", "batch")
_COUNTS = ("waits", "_calls", "handovers", "_cleared", "_n", "_records")
"""Counters that count (reported per 1,000 events); the others are seconds (µs per event)."""


def _broker_pid() -> int | None:
    """The Kafka broker's JVM on this machine (a java process naming kafka), if any."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                args = fh.read()
            if args.split(b"\0")[0].endswith(b"java") and b"kafka" in args.lower():
                return int(pid)
    return None


def _machine(broker: int | None) -> tuple[float, float]:
    """Seconds of CPU every core spent busy (``/proc/stat``: not idle nor waiting for I/O),
    and the broker's JVM's CPU seconds (0 when unknown)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks
    jvm = 0.0
    if broker is not None:
        with contextlib.suppress(OSError):
            with open(f"/proc/{broker}/stat") as fh:
                stat = fh.read()
            utime, stime = stat[stat.rindex(")") + 2 :].split()[11:13]
            jvm = (int(utime) + int(stime)) / ticks
    return busy, jvm


def _group(name: str) -> str:
    """A thread's row: librdkafka's by role (``rdk:broker3`` -> ``rdk:broker``)."""
    if name.startswith("hexa-kafka-consumer"):
        return "retry_member" if name.endswith(".retry") else "member"
    return name.rstrip("0123456789_-")


class Counters:
    """Sums kept while measuring (reset at the start mark)."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, key: str, value: float = 1.0) -> None:
        self.values[key] = self.values.get(key, 0.0) + value


class Probe:
    """Snapshots at the first and the last handled event, plus the counters."""

    def __init__(self) -> None:
        self.marks: dict[str, tuple[dict[int, Any], float, float, tuple[float, float]]] = {}
        self.broker = _broker_pid()
        self.names: dict[int, str] = {}
        self.counters = Counters()
        self.subscriptions: list[Any] = []
        self.measuring = False
        self.member_state = {"main": "python"}
        """Where the main member's thread is: in ``consume``/``poll`` (``librdkafka``: the
        call, the wait for the GIL after it and the client building its messages), in a
        commit, waiting for room, or elsewhere (``python``)."""
        self.fetchq: list[int] = []
        """Records in librdkafka's fetch queues at each statistics (``--stats``)."""
        self.timeline: list[tuple[str, float, float]] = []
        """(what, when it began, seconds): idle waits and empty consume calls."""

    def on_stats(self, stats: str) -> None:
        """librdkafka's statistics (``--stats``): the records fetched and not consumed yet,
        over the partitions, sampled while measuring."""
        if not self.measuring:
            return
        topics = json.loads(stats).get("topics", {})
        queued = sum(
            int(p.get("fetchq_cnt", 0))
            for topic in topics.values()
            for number, p in topic.get("partitions", {}).items()
            if int(number) >= 0
        )
        self.fetchq.append(queued)

    def note(self, what: str, began: float, seconds: float) -> None:
        self.timeline.append((what, began, seconds))

    def mark(self, label: str) -> None:
        self.marks[label] = (
            thread_times(),
            time.process_time(),
            time.perf_counter(),
            _machine(self.broker),
        )
        self.names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id})
        if label == "start":
            self.counters.values.clear()
            self.timeline.clear()
            self.fetchq.clear()
            self.measuring = True
        else:
            self.measuring = False

    def watch_select(self) -> None:
        """Time the running loop's idle waits in ``select``, by what was buffered."""
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        select = selector.select
        add = self.counters.add

        def timed(timeout: float | None = None) -> Any:
            if timeout == 0 or not self.measuring:
                return select(timeout)
            held = sum(sub._buffered for sub in self.subscriptions)
            member = self.member_state["main"]
            began = time.perf_counter()
            try:
                return select(timeout)
            finally:
                spent = time.perf_counter() - began
                kind = "held" if held else "empty"
                add("select", spent)
                add("select_waits")
                add(f"idle_{kind}", spent)
                add(f"idle_{kind}_waits")
                if not held:  # where the member was when the loop ran dry
                    add(f"idle_empty_member_{member}", spent)
                    self.note("idle_empty", began, spent)

        selector.select = timed

    def watch_handovers(self) -> None:
        """Time ``call_soon_threadsafe`` on the other threads (the member's hand-over: a
        write to the loop's socket, which gives up the GIL and takes it back)."""
        loop = asyncio.get_running_loop()
        call = loop.call_soon_threadsafe
        loop_thread = threading.get_ident()
        add = self.counters.add

        def timed(callback: Any, *args: Any, context: Any = None) -> Any:
            if not self.measuring or threading.get_ident() == loop_thread:
                return call(callback, *args, context=context)
            cpu0, began = time.thread_time(), time.perf_counter()
            try:
                return call(callback, *args, context=context)
            finally:
                wall = time.perf_counter() - began
                _account(add, "handover_send", wall, time.thread_time() - cpu0)

        loop.call_soon_threadsafe = timed  # type: ignore[method-assign, assignment]

    def instrument(self) -> None:
        """Time the Kafka driver's consumer threads and hand-overs (this process only)."""
        from hexa_event.drivers.kafka import consumer as consumer_module
        from hexa_event.drivers.kafka import member as member_module

        probe = self
        add = self.counters.add

        class TimedConsumer(member_module.Consumer):  # type: ignore[misc, name-defined]
            role = "main"

            def consume(self, num_messages: int = 1, timeout: float = -1) -> Any:
                if not probe.measuring:
                    return super().consume(num_messages, timeout)
                main = self.role == "main"
                key = "consume" if main else "retry_consume"
                probe.member_state[self.role] = "librdkafka"
                cpu0, began = time.thread_time(), time.perf_counter()
                messages = super().consume(num_messages, timeout)
                wall = time.perf_counter() - began
                cpu = time.thread_time() - cpu0
                probe.member_state[self.role] = "python"
                _account(add, key, wall, cpu)
                got = len(messages)
                add(f"{key}_records", got)
                if not main:
                    return messages
                if got >= num_messages and timeout > 0:
                    _account(add, "full", wall, cpu)
                elif got == 0:
                    add("empty_calls")
                    probe.note("empty_consume", began, wall)
                else:
                    add("partial_calls")
                return messages

            def poll(self, timeout: float = -1) -> Any:
                if not probe.measuring:
                    return super().poll(timeout)
                probe.member_state[self.role] = "librdkafka"
                cpu0, began = time.thread_time(), time.perf_counter()
                message = super().poll(timeout)
                wall = time.perf_counter() - began
                cpu = time.thread_time() - cpu0
                probe.member_state[self.role] = "python"
                key = "poll" if self.role == "main" else "retry_poll"
                _account(add, key, wall, cpu)
                return message

            def commit(self, *args: Any, **kwargs: Any) -> Any:
                if not probe.measuring:
                    return super().commit(*args, **kwargs)
                probe.member_state[self.role] = "commit"
                cpu0, began = time.thread_time(), time.perf_counter()
                try:
                    return super().commit(*args, **kwargs)
                finally:
                    probe.member_state[self.role] = "python"
                    wall = time.perf_counter() - began
                    cpu = time.thread_time() - cpu0
                    _account(add, f"{self.role}_commit", wall, cpu)

        class TimedRoom(threading.Event):
            key = "room"

            def wait(self, timeout: float | None = None) -> bool:
                if not probe.measuring:
                    return super().wait(timeout)
                main = self.key == "room"
                if main:
                    probe.member_state["main"] = "room"
                began = time.perf_counter()
                try:
                    return super().wait(timeout)
                finally:
                    add(f"{self.key}_wait", time.perf_counter() - began)
                    add(f"{self.key}_waits")
                    if main:
                        probe.member_state["main"] = "python"

            def clear(self) -> None:
                if probe.measuring and self.is_set():
                    add("room_cleared")
                super().clear()

        class TimedMember(member_module.Member):
            def __init__(self, owner: Any, *args: Any, **kwargs: Any) -> None:
                super().__init__(owner, *args, **kwargs)
                self.room = TimedRoom()
                self.room.set()
                if owner not in probe.subscriptions:
                    probe.subscriptions.append(owner)

            def _on_stats(self, stats: str) -> None:
                super()._on_stats(stats)
                if not self.group.endswith(".retry"):
                    probe.on_stats(stats)

            def start(self) -> None:
                super().start()
                if self.group.endswith(".retry"):
                    setattr(self._consumer, "role", "retry")  # noqa: B010 (a C type's stub)
                    setattr(self.room, "key", "retry_room")  # noqa: B010

        subscription_class = consumer_module.KafkaSubscription
        on_messages = subscription_class.on_messages

        def timed_on_messages(sub: Any, member: Any, messages: list[Any]) -> None:
            if not probe.measuring:
                return on_messages(sub, member, messages)
            began = time.thread_time()
            try:
                return on_messages(sub, member, messages)
            finally:
                add("handover_cpu", time.thread_time() - began)
                add("handovers")

        member_module.Consumer = TimedConsumer  # type: ignore[attr-defined]
        consumer_module.Member = TimedMember  # type: ignore[attr-defined]
        subscription_class.on_messages = timed_on_messages  # type: ignore[method-assign, assignment]

    def report(self, kind: str, count: int) -> dict[str, Any]:
        before, cpu0, wall0, machine0 = self.marks["start"]
        after, cpu1, wall1, machine1 = self.marks["end"]
        per: dict[str, list[float]] = {}
        for tid, (comm, cpu, vol, invol, waited) in after.items():
            base = before.get(tid, (comm, 0.0, 0, 0, 0.0))
            name = "loop" if tid == os.getpid() else _group(self.names.get(tid, comm))
            row = per.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            for i, value in enumerate((cpu, vol, invol, waited)):
                row[i] += value - base[i + 1]
        n = count
        values = self.counters.values
        counts = {k for k in values if k.endswith(_COUNTS)}
        us = {k: v / n * 1e6 for k, v in values.items() if k not in counts}
        per_1000 = {k: v * 1000 / n for k, v in values.items() if k in counts}
        result: dict[str, Any] = {
            "kind": kind,
            "rate": n / (wall1 - wall0),
            "wall_us": (wall1 - wall0) / n * 1e6,
            "cpu_us": (cpu1 - cpu0) / n * 1e6,
            "load": os.getloadavg()[0],
            "machine_busy_cores": (machine1[0] - machine0[0]) / (wall1 - wall0),
            "broker.cpu_us": (machine1[1] - machine0[1]) / n * 1e6,
        }
        result.update({f"{k}_us": round(v, 3) for k, v in us.items()})
        result.update({f"{k}_per_1000": round(v, 2) for k, v in per_1000.items()})
        if values.get("consume_n"):
            result["records_per_consume"] = round(
                values.get("consume_records", 0) / values["consume_n"], 1
            )
        wall = wall1 - wall0
        for what in ("idle_empty", "empty_consume"):
            fifths = [0.0] * 5
            for kind, began, seconds in self.timeline:
                if kind == what:
                    at = min(4, max(0, int((began - wall0) / wall * 5)))
                    fifths[at] += seconds
            result[f"{what}_ms_by_fifth"] = [round(x * 1e3, 1) for x in fifths]
        for name, (cpu, vol, invol, waited) in per.items():
            if cpu or vol or invol:
                result[f"{name}.cpu_us"] = round(cpu / n * 1e6, 3)
                result[f"{name}.runnable_us"] = round(waited / n * 1e6, 3)
                result[f"{name}.vol_per_1000"] = round(vol * 1000 / n, 2)
                result[f"{name}.invol_per_1000"] = round(invol * 1000 / n, 2)
        if self.fetchq:
            result["fetchq_samples"] = self.fetchq
        if "loop.cpu_us" in result:
            result["loop_rest_us"] = (
                result["wall_us"]
                - result["loop.cpu_us"]
                - result["loop.runnable_us"]
                - result.get("select_us", 0.0)
            )
        if "member.cpu_us" in result:
            member_off = sum(
                result.get(f"{call}_off_us", 0.0)
                for call in ("consume", "poll", "main_commit", "handover_send")
            )
            result["member_rest_us"] = (
                result["wall_us"]
                - result["member.cpu_us"]
                - member_off
                - result.get("room_wait_us", 0.0)
            )
        return result


def _account(add: Any, key: str, wall: float, cpu: float) -> None:
    """One call: a count, its wall and CPU seconds and the rest (``off``: waiting for
    records, for a core or for the GIL)."""
    add(f"{key}_n")
    add(f"{key}_wall", wall)
    add(f"{key}_cpu", cpu)
    add(f"{key}_off", max(0.0, wall - cpu))


# -- one run (a child process) -------------------------------------------------------------------


STATS_MS = 50
"""``--stats``: librdkafka's statistics interval (ms)."""


def run_raw(probe: Probe, topic: str, count: int, stats: bool) -> None:
    """``_kafka.raw_consume``'s loop, marked at the first and the last record."""
    import msgspec
    from _kafka import raw_consume
    from kafka_consume import Tick

    config = {"statistics.interval.ms": STATS_MS, "stats_cb": probe.on_stats} if stats else {}
    raw_consume(topic, count, msgspec.json.Decoder(Tick).decode, config, probe.mark)


async def run_receiver(probe: Probe, topic: str, count: int, batch: bool, stats: bool) -> None:
    """``kafka_consume.py``'s receiver or ``kafka_batch.py``'s batch handler."""
    from _kafka import BOOTSTRAP
    from faststream_kafka import Order
    from kafka_consume import Tick

    import hexa_event as he

    probe.watch_select()
    probe.watch_handovers()
    query = f"?statistics.interval.ms={STATS_MS}" if stats else ""
    connection = he.connect(f"kafka://{BOOTSTRAP}{query}")
    done = asyncio.Event()
    seen = 0

    def handled(n: int) -> None:
        nonlocal seen
        if seen == 0:
            probe.mark("start")
        seen += n
        if seen >= count and not done.is_set():
            probe.mark("end")
            done.set()

    if batch:
        receiver = connection.receiver("bench")

        @receiver.subscribe(
            topic,
            action=f"bench-batch-{uuid.uuid4().hex[:8]}",
            payload=Order,
            batch=he.Batch(max_size=500, max_wait=0.05),
        )
        async def handle_batch(ctx: he.Context, msgs: list[he.Message[Order]]) -> None:
            handled(len(msgs))

    else:
        receiver = connection.receiver("bench", concurrency=256)

        @receiver.subscribe(topic, action=f"bench-{uuid.uuid4().hex[:8]}", payload=Tick)
        async def handle(ctx: he.Context, msg: he.Message[Tick]) -> None:
            handled(1)

    try:
        await receiver.start()
        await asyncio.wait_for(done.wait(), 120)
    finally:
        await receiver.close()
        await connection.close()


def one(
    kind: str, topic: str, count: int, tuned: bool, switch: float | None, stats: bool
) -> dict[str, Any]:
    probe = Probe()
    if switch:
        sys.setswitchinterval(switch)
    if tuned:
        from hexa_event.runner import collector

        collector.tune()
    if kind == "raw":
        run_raw(probe, topic, count, stats)
    else:
        probe.instrument()
        asyncio.run(run_receiver(probe, topic, count, kind == "batch", stats))
    return {**probe.report(kind, count), "switch_interval_ms": sys.getswitchinterval() * 1e3}


# -- the rounds (the parent) ---------------------------------------------------------------------


def fill_topics(kinds: list[str], count: int) -> dict[str, str]:
    from faststream_kafka import fill as fill_orders
    from kafka_consume import fill as fill_ticks

    topics: dict[str, str] = {}
    if {"raw", "receiver"} & set(kinds):
        topics["raw"] = topics["receiver"] = fill_ticks(count)
    if "batch" in kinds:
        topics["batch"] = fill_orders(count)
    return topics


def child(
    kind: str,
    topic: str,
    args: argparse.Namespace,
    tree: str | None,
    switch: float | None,
    patch: str | None,
) -> dict[str, Any]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(tree) / "src"), str(HERE)])
    command = [sys.executable, str(Path(__file__).resolve()), "--one", kind, "--topic", topic]
    command += ["--count", str(args.count)] + (["--tuned"] if args.tuned else [])
    command += ["--stats"] if args.stats else []
    if switch:
        command += ["--switch-interval", str(switch)]
    if patch:
        command += ["--patch", patch]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} ({tree}) failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["tree"] = (
        (tree or ".")
        + (f"+si{switch * 1e3:g}ms" if switch else "")
        + (f"+{patch}" if patch else "")
    )
    return result


def _line(run: dict[str, Any]) -> str:
    """One run in a line (µs per event): the rate, process CPU, and each thread's wall time
    split as the module's docstring says."""

    def get(key: str) -> float:
        return float(run.get(key, 0.0))

    text = (
        f"{run['rate']:,.0f}/s cpu {get('cpu_us'):.2f} wall {get('wall_us'):.2f} "
        f"load {get('load'):.1f} busy cores {get('machine_busy_cores'):.2f} "
        f"broker jvm {get('broker.cpu_us'):.2f} rdk {get('rdk:broker.cpu_us'):.2f}"
    )
    if "select_us" in run or "loop_rest_us" in run:
        text += (
            f" | loop cpu {get('loop.cpu_us'):.2f} runnable {get('loop.runnable_us'):.2f} "
            f"idle {get('idle_empty_us'):.2f}+{get('idle_held_us'):.2f} "
            f"rest {get('loop_rest_us'):.2f}"
        )
    if "member.cpu_us" in run:
        text += (
            f" | member cpu {get('member.cpu_us'):.2f} (runnable {get('member.runnable_us'):.2f})"
            f" consume off {get('consume_off_us') + get('poll_off_us'):.2f}"
            f" (full {get('full_off_us'):.2f}, empty calls {get('empty_calls_per_1000'):.2f}/k)"
            f" send off {get('handover_send_off_us'):.2f}"
            f" commit off {get('main_commit_off_us'):.2f}"
            f" room {get('room_wait_us'):.2f} ({get('room_waits_per_1000'):.2f}/k)"
            f" rest {get('member_rest_us'):.2f}"
        )
    return text


def print_medians(runs: list[dict[str, Any]]) -> None:
    contenders: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        contenders.setdefault(f"{run['kind']}@{Path(run['tree']).name}", []).append(run)
    keys = sorted({k for run in runs for k, v in run.items() if isinstance(v, int | float)})
    names = list(contenders)
    print(f"\nmedians over {max(map(len, contenders.values()))} round(s):")
    print(f"  {'':<28}" + "".join(f"{name:>22}" for name in names))
    for key in keys:
        cells = []
        for name in names:
            values = [r[key] for r in contenders[name] if key in r]
            cells.append(f"{statistics.median(values):>22,.2f}" if values else f"{'-':>22}")
        print(f"  {key:<28}" + "".join(cells))
    for name, group in contenders.items():
        for key in sorted(k for k, v in group[0].items() if isinstance(v, list)):
            print(f"  {name} {key}: " + "  ".join(str(run.get(key)) for run in group))


def apply_patch(patch: str) -> None:
    """``MODULE:NAME=VALUE``: set a module's constant (VALUE a Python literal)."""
    target, value = patch.split("=", 1)
    module, name = target.split(":")
    setattr(importlib.import_module(module), name, ast.literal_eval(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--tuned", action="store_true", help="the collector tuned as run does")
    parser.add_argument(
        "--stats",
        action="store_true",
        help=f"librdkafka's statistics every {STATS_MS} ms: the records in its fetch queues",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        action="append",
        help="sys.setswitchinterval in each run (CPython's default 0.005); repeatable: the "
        "values alternate as trees do",
    )
    parser.add_argument(
        "--patch",
        action="append",
        help="MODULE:NAME=VALUE set in each run before it starts, e.g. "
        "hexa_event.drivers.kafka.member:_CONSUME_BATCH=2000; repeatable (alternating), "
        "'none' for a run without",
    )
    parser.add_argument("--tree", action="append", help="a worktree whose src to run (A/B)")
    parser.add_argument("--json", help="append every run as a JSON line to this file")
    parser.add_argument("--one", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        for patch in args.patch or []:
            apply_patch(patch)
        switch = (args.switch_interval or [None])[0]
        print(json.dumps(one(args.one, args.topic, args.count, args.tuned, switch, args.stats)))
        return
    kinds = [k for k in args.kinds.split(",") if k]
    print(f"-- filling topics with {args.count:,} events", flush=True)
    topics = fill_topics(kinds, args.count)
    runs: list[dict[str, Any]] = []
    setups = [
        (tree, switch, None if patch == "none" else patch)
        for tree in args.tree or [None]
        for switch in args.switch_interval or [None]
        for patch in args.patch or [None]
    ]
    for number in range(1, args.rounds + 1):
        for kind in kinds:
            for tree, switch, patch in setups if number % 2 else setups[::-1]:
                result = child(kind, topics[kind], args, tree, switch, patch)
                runs.append(result)
                print(f"  round {number} {kind}@{Path(result['tree']).name}: {_line(result)}")
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(result) + "\n")
    print_medians(runs)


if __name__ == "__main__":
    main()
