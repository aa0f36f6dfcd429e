"""Where Go hexa-event's producers put a key: sarama's default hash partitioner.

sarama's ``NewHashPartitioner`` (the default of ``sarama.NewConfig``, which Go hexa-event's
``hafka`` uses) hashes the key with 32-bit FNV-1a, reads the sum as a signed int32, takes
Go's remainder (sign of the dividend) and then the absolute value. librdkafka's
``fnv1a_random`` partitioner takes the absolute value of the signed hash first and then the
remainder, which gives the same partition for every key (including the int32 minimum); the
tests check both against vectors from a real sarama run. The driver sets
``partitioner=fnv1a_random``; this module is the reference used by those tests and tools.
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
    # Go's % truncates toward zero: the result has the sign of the dividend.
    remainder = abs(signed) % partitions
    if signed < 0:
        remainder = -remainder
    return -remainder if remainder < 0 else remainder
