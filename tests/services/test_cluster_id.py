"""A KRaft cluster id must not start with '-': Kafka's storage tool reads it as an option and
refuses to format (one fresh storage in 64 failed that way before)."""

from __future__ import annotations

from hexa_event_services.definitions.kafka import new_cluster_id


def test_cluster_ids_never_start_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert not any(cid.startswith("-") for cid in ids)
    assert all(len(cid) == 22 for cid in ids)
