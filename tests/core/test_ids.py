"""Event ids: canonical UUIDv7 text, unique, increasing, the emit time's millisecond, and
not repeated by a forked child."""

from __future__ import annotations

import os
import threading
import time
import uuid

import hexa_event as he
from hexa_event import envelope as env
from hexa_event.ids import EventIds, new_event_id, next_event_id


def _check(text: str, ms: int | None = None) -> None:
    parsed = uuid.UUID(text)
    assert str(parsed) == text  # canonical: lower-case 8-4-4-4-12
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    if ms is not None:
        assert parsed.int >> 80 == ms


def test_ids_are_canonical_uuid7_of_their_millisecond() -> None:
    ms = time.time_ns() // 1_000_000
    for _ in range(300):
        _check(next_event_id(ms), ms)
    _check(new_event_id())


def test_ids_in_one_millisecond_count_up_across_the_cached_prefix() -> None:
    ids = EventIds()
    ms = 1_796_611_871_829
    made = [ids.next(ms) for _ in range(2_000)]  # past several 256-id prefixes
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert [uuid.UUID(i).int for i in made] == list(
        range(uuid.UUID(made[0]).int, uuid.UUID(made[0]).int + len(made))
    )
    later = ids.next(ms + 1)
    assert later > made[-1]
    assert ids.next(ms - 5) > later  # the clock went back: still increasing
    assert uuid.UUID(ids.next(ms - 5)).int >> 80 == ms + 1


def test_each_millisecond_starts_at_a_random_value() -> None:
    ms = 1_796_611_871_829
    firsts = {EventIds().next(ms) for _ in range(50)}
    assert len(firsts) == 50  # two generators (processes, threads) do not collide


def test_threads_get_distinct_ids() -> None:
    ms = time.time_ns() // 1_000_000
    out: list[list[str]] = [[] for _ in range(4)]

    def make(n: int) -> None:
        out[n].extend(next_event_id(ms) for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for part in out for i in part]
    assert len(set(every)) == len(every)
    for part in out:
        assert part == sorted(part)


def test_sealed_ids_carry_the_emit_time_and_increase() -> None:
    envelope = env.Envelope()
    records = envelope.seal_many(he.Event("c", "k", {"n": n}) for n in range(1_000))
    ids = [r.headers[env.EVENT_ID].decode() for r in records]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for record, text in zip(records, ids, strict=True):
        _check(text, int(record.headers[env.EVENT_TIME]))


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ms = time.time_ns() // 1_000_000
    next_event_id(ms)  # the parent's state for this millisecond exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read)
        os.write(write, ",".join(next_event_id(ms) for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = set(pipe.read().decode().split(","))
    os.waitpid(pid, 0)
    parent = {next_event_id(ms) for _ in range(20)}
    assert len(child) == 20
    assert not child & parent
