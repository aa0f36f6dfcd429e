"""A consumer group's lag per topic, read with the admin client (blocking: run it in a thread).

Per partition: the high watermark (the next offset to be written) minus the group's
committed offset; a partition the group never committed counts from its first retained
record when the group starts at ``earliest`` and as 0 when it starts at ``latest`` (it will
begin at the end). Three requests whatever the partition count: the topic metadata, the
group's committed offsets, the end (and, for partitions never committed, start) offsets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from confluent_kafka import (  # type: ignore[attr-defined]
    ConsumerGroupTopicPartitions,
    KafkaException,
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
    metadata = admin.list_topics(timeout=timeout)
    matcher = re.compile(pattern) if pattern else None
    wanted = [
        name
        for name, topic in metadata.topics.items()
        if topic.error is None
        and (name in topics or (matcher is not None and matcher.fullmatch(name) is not None))
    ]
    out = dict.fromkeys(topics, 0)
    partitions = [
        TopicPartition(name, number)
        for name in wanted
        for number in metadata.topics[name].partitions
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
