"""The memory driver's one option, from the URL query or a keyword."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..kit.options import DriverOptions, ParsedUrl, check_count


@dataclass(frozen=True, slots=True)
class MemoryOptions(DriverOptions):
    """``partitions``: how many partitions each channel has (a key's partition keeps its
    order), 1 to 10000. ``name``: the shared broker's name (the URL's host and path);
    empty for a broker private to one connection."""

    engine = "memory"
    query_exclude = ("name",)

    partitions: int = 4
    name: str = ""

    def __post_init__(self) -> None:
        check_count("MemoryOptions", "partitions", self.partitions, maximum=10_000)

    @classmethod
    def from_parts(cls, fields: dict[str, Any], url: ParsedUrl) -> None:
        fields.setdefault("name", (url.parts.netloc + url.parts.path).strip("/"))
