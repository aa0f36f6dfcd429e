"""RecentAcks: what a STAN member acked lately (no server needed)."""

from __future__ import annotations

from hexa_event.drivers.stan.acked import RecentAcks


def test_a_sequence_is_covered_for_keep_seconds_after_its_ack() -> None:
    acks = RecentAcks(keep=4.0)
    assert not acks
    acks.add(7, now=100.0)
    assert acks.covers(7, 100.0)
    assert acks.covers(7, 103.9)
    assert not acks.covers(7, 104.0)
    assert not acks.covers(8, 100.0)


def test_prune_forgets_what_is_older_than_keep() -> None:
    acks = RecentAcks(keep=4.0)
    acks.add(1, now=100.0)
    acks.add(2, now=101.0)
    acks.prune(now=104.5)
    assert len(acks) == 1
    assert not acks.covers(1, 100.5)  # forgotten, even when asked with an earlier time
    assert acks.covers(2, 104.5)


def test_prune_keeps_at_most_the_newest_most() -> None:
    acks = RecentAcks(keep=60.0, most=3)
    for sequence in range(1, 6):
        acks.add(sequence, now=100.0 + sequence)
    acks.prune(now=106.0)
    assert len(acks) == 3
    assert [s for s in range(1, 6) if acks.covers(s, 106.0)] == [3, 4, 5]


def test_a_sequence_acked_again_keeps_its_newer_time() -> None:
    acks = RecentAcks(keep=4.0)
    acks.add(9, now=100.0)
    acks.add(9, now=103.0)  # delivered again after its memory ended, and acked again
    acks.prune(now=104.5)  # the first entry expires: the second stands
    assert acks.covers(9, 106.9)
    assert not acks.covers(9, 107.0)


def test_clear_forgets_everything() -> None:
    acks = RecentAcks(keep=4.0)
    acks.add(1, now=100.0)
    acks.clear()
    assert not acks
    assert not acks.covers(1, 100.0)
    acks.prune(now=200.0)  # nothing left to prune
