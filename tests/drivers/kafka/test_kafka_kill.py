"""A consumer process SIGKILLed mid-batch loses nothing; a second member finishes the work.

Events the killed process handled but had not committed come again, with the same
HEXA_EVENT_ID, so an inbox recognises them; per key, the survivor resumes in order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

import hexa_event as he
from hexa_event.testing import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PROC = Path(__file__).with_name("kafka_consumer_proc.py")
TOTAL = 6000
KEYS = 30


def _lines(path: Path) -> list[tuple[str, str, int]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[0], parts[1], int(parts[2])))
    return rows


def _start(bootstrap: str, channel: str, action: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(PROC), bootstrap, channel, action, str(out)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_consumer_killed_mid_batch_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    channel, action = f"kill-{tag}", f"kill-act-{tag}"
    driver = he.connect(f"kafka://{kafka_bootstrap}", partitions=3)
    try:
        ids = await driver.emitter().emit_many(
            he.Event(channel, f"k{i % KEYS}", {"seq": i // KEYS}) for i in range(TOTAL)
        )
    finally:
        await driver.close()

    first, second = tmp_path / "first.log", tmp_path / "second.log"
    victim = _start(kafka_bootstrap, channel, action, first)
    try:
        await eventually(lambda: len(_lines(first)) > 0, within=90, what="the first consumer")
        began = time.monotonic()
        # Past the driver's 1 s offset commits, but well before the end of the backlog.
        await eventually(
            lambda: time.monotonic() - began > 2.0 and len(_lines(first)) >= TOTAL // 5,
            within=60,
            what="the first consumer to handle a fifth of the events",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_at = len(_lines(first))
    assert killed_at < TOTAL, "the first consumer finished before it could be killed"

    survivor = _start(kafka_bootstrap, channel, action, second)
    try:
        await eventually(
            lambda: {row[0] for row in _lines(first) + _lines(second)} >= set(ids),
            within=120,
            what="every event to be handled by one of the two processes",
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        try:
            survivor.wait(30)
        except subprocess.TimeoutExpired:
            survivor.kill()

    handled_first, handled_second = _lines(first), _lines(second)
    again = {r[0] for r in handled_first} & {r[0] for r in handled_second}
    # Redeliveries are only what the killed process had not committed (its offsets of the
    # last second or so), recognisable by their ids; what it committed is not handled again.
    assert killed_at - len(again) > 0
    per_key: dict[str, list[int]] = defaultdict(list)
    for _, key, seq in handled_second:
        per_key[key].append(seq)
    for key, seqs in per_key.items():
        assert seqs == sorted(seqs), f"survivor handled {key} out of order: {seqs}"
