"""Text headers (Pulsar's properties, a map with no order) as the pairs a record batch
carries: our emitters' eight in the order the core reads them by position."""

from __future__ import annotations

import pytest

from hexa_event.dispatch import SEALED_HEADERS
from hexa_event.drivers.kit import textheaders


def test_our_emitters_eight_come_in_the_order_the_core_reads() -> None:
    assert textheaders.EMITTED == SEALED_HEADERS
    raw = {name: f"v-{name}" for name in sorted(SEALED_HEADERS)}  # as Pulsar hands them
    expected = tuple((name, f"v-{name}".encode()) for name in SEALED_HEADERS)
    assert textheaders.emitted_pairs(raw) == expected
    assert textheaders.pairs(raw) == expected


def test_other_headers_keep_the_maps_order() -> None:
    eight_others = {f"h{n}": str(n) for n in range(8)}
    with pytest.raises(KeyError):
        textheaders.emitted_pairs(eight_others)
    with pytest.raises(KeyError):
        textheaders.emitted_pairs({**dict.fromkeys(SEALED_HEADERS, "x"), "extra": "y"})
    assert textheaders.pairs(eight_others) == [(f"h{n}", str(n).encode()) for n in range(8)]
    assert textheaders.pairs({}) == []
