"""Per-partition offset bookkeeping without a broker: settling a batch's acks as a run
(``PartitionState.complete_all``) ends exactly where acking them one by one does."""

from __future__ import annotations

import random

import pytest

from hexa_event.drivers.kafka.offsets import PartitionState


def _state(received: list[int]) -> PartitionState:
    state = PartitionState(("t", 0), member=None, committed=received[0] if received else 0)
    for offset in received:
        state.offsets.append(offset)
        state.next_offset = offset + 1
    return state


def _snapshot(state: PartitionState) -> tuple[list[int], set[int], int]:
    return list(state.offsets), set(state.done), state.watermark()


def test_a_run_at_the_head_is_dropped_at_once() -> None:
    state = _state(list(range(10, 20)))
    state.complete_all([12, 10, 11])  # any order
    assert _snapshot(state) == (list(range(13, 20)), set(), 13)


def test_a_run_at_the_head_also_drops_what_was_finished_behind_it() -> None:
    state = _state(list(range(10, 20)))
    state.complete(14)  # finished behind the unfinished head
    state.complete_all([13, 10, 11, 12])
    assert _snapshot(state) == (list(range(15, 20)), set(), 15)


def test_acks_that_are_not_the_head_run_never_move_past_an_unfinished_offset() -> None:
    state = _state([3, 5, 8, 9, 12])  # gaps: compacted or skipped offsets
    state.complete_all([12, 5, 9])  # the head (3) is unfinished
    assert state.watermark() == 3
    assert _snapshot(state) == ([3, 5, 8, 9, 12], {5, 9, 12}, 3)
    state.complete_all([8, 3])
    assert _snapshot(state) == ([], set(), 13)


@pytest.mark.parametrize("seed", range(100))
def test_same_result_as_acking_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    received = sorted(rng.sample(range(100, 160), rng.randint(1, 40)))
    one_by_one, runs = _state(received), _state(received)
    unfinished = list(received)
    rng.shuffle(unfinished)
    while unfinished:
        batch = [unfinished.pop() for _ in range(min(len(unfinished), rng.randint(1, 8)))]
        if rng.random() < 0.5:  # often the oldest ones, as a batch in order acks them
            head = sorted(set(one_by_one.offsets) - one_by_one.done)[: len(batch)]
            unfinished = [o for o in unfinished + batch if o not in head]
            batch = head
            rng.shuffle(batch)
        for offset in batch:
            one_by_one.complete(offset)
        runs.complete_all(list(batch))
        assert _snapshot(runs) == _snapshot(one_by_one)
    assert _snapshot(runs) == ([], set(), received[-1] + 1)
