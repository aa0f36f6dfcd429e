"""The retry group's :class:`OffsetReader` answers every read, also one it cannot serve: a
read queued behind its close, or every read of a reader whose consumer librdkafka refused
(no broker needed: nothing here reaches one)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from hexa_event.drivers.kafka import member
from hexa_event.drivers.kafka.member import OffsetReader

pytestmark = pytest.mark.kafka

_NOWHERE = {"bootstrap.servers": "127.0.0.1:1", "group.id": "hexa-offset-reader-test"}


def test_a_read_queued_behind_close_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(member, "_WARM_TIMEOUT", 0.1)  # its first read finds no broker
    reader = OffsetReader(dict(_NOWHERE), TopicPartition("t", 0), "closed")
    reader.close()
    with pytest.raises(KafkaException) as caught:
        reader.committed([TopicPartition("t", 0)], 30)
    assert caught.value.args[0].code() == KafkaError._DESTROY


def test_a_refused_config_fails_every_read() -> None:
    config = {**_NOWHERE, "no.such.setting": "1"}
    reader = OffsetReader(config, TopicPartition("t", 0), "refused")
    for _ in range(2):  # queued before the refusal or raised after it: an answer either way
        with pytest.raises(KafkaException):
            reader.committed([TopicPartition("t", 0)], 30)
