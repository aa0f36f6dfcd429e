"""``PairHeaders``: a record's headers read-only over its client's (name, value) pairs, what
a batch handler's ``msg.headers`` is for records of a record batch. It must read exactly as
the dict the drivers build (of repeated names the last wins, a null value is ``b""``) and as
the ``MappingProxyType`` a single handler gets, building that dict only when first read."""

from __future__ import annotations

import base64
import gc
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest

from hexa_event.codecs import get_codec
from hexa_event.driver import PairHeaders, header_dict
from hexa_event.errors import EncodeError

PAIRS: list[tuple[str, bytes | None]] = [
    ("a", b"1"),
    ("null", None),
    ("dup", b"first"),
    ("b", b""),
    ("dup", b"last"),
]
AS_DICT = {"a": b"1", "null": b"", "dup": b"last", "b": b""}


class _Counted(list[tuple[str, bytes | None]]):
    """Pairs that count how often they are read through."""

    reads = 0

    def __iter__(self) -> Iterator[tuple[str, bytes | None]]:
        self.reads += 1
        return super().__iter__()


def test_reads_as_the_dict_of_its_pairs_the_last_of_a_name_and_null_as_empty() -> None:
    headers = PairHeaders(PAIRS)
    assert isinstance(headers, Mapping)
    assert header_dict(PAIRS) == AS_DICT
    assert headers == AS_DICT
    assert AS_DICT == headers  # noqa: SIM300  (the reflected comparison)
    assert headers == MappingProxyType(AS_DICT)
    assert MappingProxyType(AS_DICT) == headers
    assert headers == PairHeaders(list(AS_DICT.items()))
    assert headers != {**AS_DICT, "dup": b"first"}
    assert headers != [("a", b"1")]
    assert list(headers) == list(AS_DICT) == ["a", "null", "dup", "b"]  # a dict's order
    assert list(reversed(headers)) == list(reversed(AS_DICT))
    assert len(headers) == 4
    assert headers["dup"] == b"last"
    assert headers["null"] == b""
    assert headers.get("null") == b""
    assert headers.get("x") is None
    assert headers.get("x", 1) == 1
    assert "null" in headers
    assert "x" not in headers
    assert 1 not in headers
    assert list(headers.keys()) == list(AS_DICT.keys())
    assert list(headers.values()) == list(AS_DICT.values())
    assert list(headers.items()) == list(AS_DICT.items())
    assert dict(headers) == AS_DICT
    with pytest.raises(KeyError):
        headers["x"]
    assert PairHeaders([]) == {}
    assert PairHeaders(()) == {}
    assert not PairHeaders([])
    assert PairHeaders([("a", b"1")]) == {"a": b"1"}  # no null: the dict of the pairs


def test_is_read_only_as_a_mappingproxy_is() -> None:
    headers = PairHeaders(PAIRS)
    proxy = MappingProxyType(header_dict(PAIRS))
    copied = headers.copy()
    assert copied == proxy.copy()
    assert type(copied) is dict
    copied["a"] = b"changed"
    assert headers["a"] == b"1"
    assert (headers | {"c": b"3"}) == (proxy | {"c": b"3"}) == {**AS_DICT, "c": b"3"}
    assert ({"a": b"0", "c": b"3"} | headers) == ({"a": b"0", "c": b"3"} | proxy)
    for view in (headers, proxy):
        with pytest.raises(TypeError):
            view["a"] = b"2"  # type: ignore[index]
        with pytest.raises(TypeError):
            del view["a"]  # type: ignore[attr-defined]
        with pytest.raises(TypeError):
            hash(view)
        with pytest.raises(AttributeError):
            view.update({"a": b"2"})  # type: ignore[attr-defined]
    assert headers == AS_DICT
    assert repr(AS_DICT) in repr(headers)


def test_builds_its_dict_once_and_only_when_read() -> None:
    pairs = _Counted(PAIRS)
    headers = PairHeaders(pairs)
    assert pairs.reads == 0  # a batch handler that never reads msg.headers pays no dict
    assert headers["a"] == b"1"
    assert pairs.reads == 1
    assert (len(headers), list(headers), headers.get("dup"), "a" in headers) == (
        4,
        list(AS_DICT),
        b"last",
        True,
    )
    assert headers == AS_DICT
    assert pairs.reads == 1
    assert pairs == PAIRS  # the client's pairs are left as they came


def test_is_not_tracked_by_the_garbage_collector_read_or_not() -> None:
    """A batch handler's messages hold one each for the whole batch: untracked, as the
    ``Message`` holding it, they add nothing for the collector to walk."""
    headers = PairHeaders(PAIRS)
    assert not gc.is_tracked(headers)
    assert headers["dup"] == b"last"
    assert not gc.is_tracked(headers)


def test_a_payload_holding_the_view_is_refused_naming_what_to_encode_instead() -> None:
    """msgspec writes a struct's fields: the view must be refused in a payload (a plain dict
    of its headers is what to put there), never written as its inner fields."""
    headers = PairHeaders(PAIRS)
    codec = get_codec("json")
    for payload in ({"headers": headers}, [headers]):
        with pytest.raises(EncodeError, match="cannot encode ReadOnlyHeaders; use a dict"):
            codec.encode(payload)
    headers.mapping()  # read: the view holds its dict now, and is still refused
    with pytest.raises(EncodeError, match="ReadOnlyHeaders"):
        codec.encode({"headers": headers})
    as_json = {name: base64.b64encode(value).decode() for name, value in AS_DICT.items()}
    assert codec.decode(codec.encode({"headers": dict(headers)}), None) == {"headers": as_json}
