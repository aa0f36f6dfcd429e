"""Where Go hexa-event's producers put a key: sarama's default hash partitioner (32-bit
FNV-1a, Go's signed remainder). librdkafka's ``fnv1a_random``, which the driver sets, picks
the same partition for every key; this is the reference the tests check it against.
"""

from __future__ import annotations

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a of ``data`` as an unsigned integer."""
    h = _FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def sarama_partition(key: bytes | str, partitions: int) -> int:
    """The partition sarama's default HashPartitioner picks for ``key``."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    data = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
    signed = fnv1a_32(data)
    if signed >= 0x80000000:
        signed -= 0x100000000
    # Go's % has the sign of the dividend; sarama then takes the absolute value of it.
    return abs(signed) % partitions
