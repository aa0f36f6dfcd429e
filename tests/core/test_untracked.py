"""What the receive path builds per event and the collector need not scan: the handler's
message and context, the raw record and a record's header pairs read as a mapping are not
tracked (fewer and cheaper collections)."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from types import MappingProxyType

import hexa_event as he
from hexa_event.driver import PairHeaders, RawRecord


@dataclass
class Order:
    id: str


def test_a_message_its_context_and_its_record_are_not_tracked() -> None:
    message: he.Message[Order] = he.Message(
        "id-1", "orders", "k", Order("o-1"), MappingProxyType({"a": b"1"}), 1, None
    )
    assert not gc.is_tracked(message)
    assert gc.is_tracked(message.payload)  # what it holds is tracked as usual
    assert not gc.is_tracked(he.Context(correlation_id="c"))
    assert not gc.is_tracked(RawRecord("orders", "k", {"a": b"1"}, b"{}"))


def test_an_untracked_message_still_keeps_its_payload_alive_and_frees_it() -> None:
    freed: list[str] = []

    class Payload:
        def __del__(self) -> None:
            freed.append("payload")

    message: he.Message[Payload] = he.Message(
        "id-1", "orders", "k", Payload(), MappingProxyType({}), 1, None
    )
    gc.collect()
    assert freed == []  # reachable through the message: never collected under it
    del message
    assert freed == ["payload"]  # reference counting frees it with the message


def test_header_pairs_read_as_a_mapping_are_not_tracked_and_keep_their_pairs() -> None:
    pairs = [("a", b"1"), ("n", None)]
    headers = PairHeaders(pairs)
    assert not gc.is_tracked(headers)
    assert headers == {"a": b"1", "n": b""}  # its dict, built now
    assert not gc.is_tracked(headers)
    del pairs
    gc.collect()
    assert headers.pairs == [("a", b"1"), ("n", None)]  # held through the untracked struct
