"""A consumer group's lag per topic, read with the admin client (blocking: run it in a
thread): per partition the end minus the group's committed offset (never committed: from
the first record at ``earliest``, 0 at ``latest``), in three requests whatever the count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from confluent_kafka import (  # type: ignore[attr-defined]
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]


def group_lag(
    admin: AdminClient,
    group: str,
    topics: Sequence[str],
    pattern: str | None,
    *,
    earliest: bool,
    timeout: float,
) -> dict[str, int]:
    """``{topic: records not committed by group}`` for ``topics`` and those matching
    ``pattern`` (a regular expression on whole names). Raises KafkaException."""
    if pattern:  # every topic's name is needed to match it
        metadata = admin.list_topics(timeout=timeout)
        matcher = re.compile(pattern)
        numbers = {
            name: list(topic.partitions)
            for name, topic in metadata.topics.items()
            if topic.error is None and (name in topics or matcher.fullmatch(name) is not None)
        }
    else:
        numbers = _partition_numbers(admin, topics, timeout)
    out = dict.fromkeys(topics, 0)
    partitions = [
        TopicPartition(name, number) for name, found in numbers.items() for number in found
    ]
    if not partitions:
        return out
    request = [ConsumerGroupTopicPartitions(group, partitions)]
    (answer,) = admin.list_consumer_group_offsets(request, request_timeout=timeout).values()
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in answer.result(timeout).topic_partitions
        if tp.error is None
    }
    latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    first: OffsetSpec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    ends = _offsets(admin, partitions, latest, timeout)
    fresh = [tp for tp in partitions if committed.get((tp.topic, tp.partition), -1) < 0]
    starts = _offsets(admin, fresh, first, timeout) if fresh and earliest else {}
    for key, end in ends.items():
        done = committed.get(key, -1)
        if done < 0:
            done = starts.get(key, end)
        out[key[0]] = out.get(key[0], 0) + max(0, end - done)
    return out


def _partition_numbers(
    admin: AdminClient, topics: Sequence[str], timeout: float
) -> dict[str, list[int]]:
    """The partition numbers of the named topics (those that exist), asked for those only:
    ``list_topics()`` builds every topic's metadata, which the event loop pays for in GC."""
    if not topics:
        return {}
    futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=timeout)
    out: dict[str, list[int]] = {}
    for name, future in futures.items():
        try:
            out[name] = [info.id for info in future.result(timeout).partitions]
        except KafkaException:
            continue
    return out


def _offsets(
    admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec, timeout: float
) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets({tp: spec for tp in partitions}, request_timeout=timeout)
    out = {}
    for tp, future in futures.items():
        try:
            out[(tp.topic, tp.partition)] = int(future.result(timeout).offset)
        except KafkaException:
            continue  # a partition without a leader right now: left out of this sample
    return out
