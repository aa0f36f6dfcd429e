"""A consumer group's lag per topic, read with the admin client (blocking: run it in a
thread): per partition the end minus the group's committed offset (never committed: from
the first record at ``earliest``, 0 at ``latest``), in three requests whatever the count;
and what ``hexa-event doctor`` tells of a group: its state, members and topics.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from confluent_kafka import (  # type: ignore[attr-defined]
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

K = TypeVar("K")
V = TypeVar("V")


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
    elif topics:  # described by name: list_topics() builds every topic's metadata (GC)
        futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=timeout)
        numbers = _answers(futures, timeout, lambda found: [p.id for p in found.partitions])
    else:
        numbers = {}
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


def describe_group(admin: AdminClient, group: str, *, timeout: float) -> tuple[str, int, list[str]]:
    """The state of ``group`` (``stable``, ``empty``, ...), its member count and the topics
    it is on (its members' assignments and its committed offsets). Raises KafkaException."""
    (future,) = admin.describe_consumer_groups([group], request_timeout=timeout).values()
    described = future.result(timeout)
    members = described.members
    topics = {tp.topic for member in members for tp in member.assignment.topic_partitions}
    request = [ConsumerGroupTopicPartitions(group)]
    (answer,) = admin.list_consumer_group_offsets(request, request_timeout=timeout).values()
    committed = answer.result(timeout).topic_partitions
    topics.update(tp.topic for tp in committed if tp.error is None and tp.offset >= 0)
    state = described.state.name.lower().replace("_", " ")
    return state, len(members), sorted(topics)


def _answers(futures: Mapping[K, Any], timeout: float, read: Callable[[Any], V]) -> dict[K, V]:
    """Each admin future's result, ``read``; one that failed (a topic that does not exist, a
    partition without a leader right now) is left out of this sample."""
    out: dict[K, V] = {}
    for key, future in futures.items():
        with contextlib.suppress(KafkaException):
            out[key] = read(future.result(timeout))
    return out


def _offsets(
    admin: AdminClient, partitions: list[TopicPartition], spec: OffsetSpec, timeout: float
) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets({tp: spec for tp in partitions}, request_timeout=timeout)
    found = _answers(futures, timeout, lambda answer: int(answer.offset))
    return {(tp.topic, tp.partition): offset for tp, offset in found.items()}
