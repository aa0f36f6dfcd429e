"""The three-node Kafka cluster on loopback, started on demand (``up kafka-cluster``).

Each node is one KRaft process holding both roles (broker and controller): the controller
quorum is the three nodes themselves, a static voter set (``controller.quorum.voters``),
so any two of them keep the cluster's metadata going. Node ``i`` (1-3) takes the ``i``-th
address of ``HEXA_KAFKA_CLUSTER_BOOTSTRAP`` (default ports 19092-19094) for clients and
the broker port + 100 for the controller (19192-19194); data in ``run/kafka-cluster-<i>/``.
Topics default to replication factor 3 and ``min.insync.replicas=2``. The single-node
``kafka`` service (9092) is never touched.
"""

from __future__ import annotations

import os
from typing import ClassVar

from ..config import BIND_HOST, env, run_root, split_hostport
from ..probes import kafka_probe
from .kafka import Kafka, new_cluster_id

CLUSTER_SIZE = 3
CONTROLLER_PORT_OFFSET = 100


def cluster_addresses() -> list[tuple[str, int]]:
    """(host, client port) of each node, from ``HEXA_KAFKA_CLUSTER_BOOTSTRAP``."""
    entries = [e.strip() for e in env("HEXA_KAFKA_CLUSTER_BOOTSTRAP").split(",") if e.strip()]
    if len(entries) != CLUSTER_SIZE:
        raise ValueError(
            f"HEXA_KAFKA_CLUSTER_BOOTSTRAP must list {CLUSTER_SIZE} host:port entries, "
            f"got {entries}"
        )
    return [split_hostport(e, 19092) for e in entries]


class KafkaNode(Kafka):
    """Node ``index`` of the cluster (subclasses fix the index and the service name)."""

    index: ClassVar[int] = 0
    stop_timeout = 20.0
    heap_env = "HEXA_KAFKA_CLUSTER_HEAP"
    default_heap = "-Xms128m -Xmx512m"

    @property
    def url(self) -> str:
        host, port = cluster_addresses()[self.index - 1]
        return f"{host}:{port}"

    @property
    def controller_port(self) -> int:
        return self.port + CONTROLLER_PORT_OFFSET

    def properties(self) -> dict[str, str]:
        props = super().properties()
        addresses = cluster_addresses()
        voters = ",".join(
            f"{i}@{BIND_HOST}:{port + CONTROLLER_PORT_OFFSET}"
            for i, (_, port) in enumerate(addresses, start=1)
        )
        h, p, c = BIND_HOST, self.port, self.controller_port
        del props["controller.quorum.bootstrap.servers"]
        props.update(
            {
                "node.id": str(self.index),
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
                "advertised.listeners": f"PLAINTEXT://{h}:{p}",
                "num.partitions": "3",
                "default.replication.factor": "3",
                "min.insync.replicas": "2",
                "unclean.leader.election.enable": "false",
                "offsets.topic.replication.factor": "3",
                "transaction.state.log.replication.factor": "3",
                "transaction.state.log.min.isr": "2",
                "share.coordinator.state.topic.replication.factor": "3",
                "share.coordinator.state.topic.min.isr": "2",
                # A dead node is fenced (its partitions get new leaders) after 6 s.
                "broker.session.timeout.ms": "6000",
                "broker.heartbeat.interval.ms": "1000",
                "replica.lag.time.max.ms": "10000",
                "num.network.threads": "2",
                "num.io.threads": "2",
                "num.replica.fetchers": "1",
                "background.threads": "2",
                "log.segment.bytes": str(16 * 1024 * 1024),
            }
        )
        return props

    def cluster_id(self) -> str:
        """One id for all three nodes, kept in ``run/kafka-cluster/cluster.id``."""
        path = run_root() / "kafka-cluster" / "cluster.id"
        if not path.is_file() or path.read_text().startswith("-"):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(new_cluster_id())
            tmp.replace(path)
        return path.read_text().strip()

    def format_args(self) -> list[str]:
        return []  # static voters: the quorum is in the properties

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        kafka_probe(self.url, timeout, expect_nodes=[self.index])


class KafkaNode1(KafkaNode):
    name = "kafka-cluster-1"
    index = 1


class KafkaNode2(KafkaNode):
    name = "kafka-cluster-2"
    index = 2


class KafkaNode3(KafkaNode):
    name = "kafka-cluster-3"
    index = 3


NODE_CLASSES: tuple[type[KafkaNode], ...] = (KafkaNode1, KafkaNode2, KafkaNode3)
