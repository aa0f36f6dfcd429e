"""The memory driver's one option, from the URL query or a keyword."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..kit.options import check_count
from ..kit.query import check_keywords, parse_query


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """``partitions``: how many partitions each channel has (a key's partition keeps its
    order), 1 to 10000. ``name``: the shared broker's name (the URL's host and path);
    empty for a broker private to one connection."""

    partitions: int = 4
    name: str = ""

    def __post_init__(self) -> None:
        check_count("MemoryOptions", "partitions", self.partitions, maximum=10_000)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryOptions:
        """The options of ``url``; keyword options win over the URL's query."""
        parts = urlsplit(url)
        check_keywords(cls, options, engine="memory")
        typed, _ = parse_query(cls, parts.query, engine="memory", exclude=("name",))
        name = (parts.netloc + parts.path).strip("/")
        return cls(**{"name": name, **typed, **options})
