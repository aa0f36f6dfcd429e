"""The three-node JetStream cluster on loopback (``up nats-cluster``), and ``nats-solo``,
a single JetStream server of its own, both started on demand.

Each node is the ``nats`` service's binary with JetStream on, clustered through routes to
the other two (a full mesh on ``cluster`` ports), its own store dir in
``run/nats-cluster-<i>/data``. Node ``i`` (1-3) takes the ``i``-th address of
``HEXA_NATS_CLUSTER_SERVERS`` (default 127.0.0.1:14222-14224) for clients, the client port
+ 2000 for routes (16222-16224) and + 4000 for monitoring (18222-18224, ``/jsz``). Any two
nodes keep JetStream's meta group and an R3 stream going. ``nats-solo`` (14225, monitoring
18225) is an unclustered server the tests may stop and start at will; the shared ``nats``
service (4222) is never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from ..config import BIND_HOST, env, split_hostport
from .nats import Nats

CLUSTER_SIZE = 3
ROUTE_PORT_OFFSET = 2000
MONITOR_PORT_OFFSET = 4000
CLUSTER_NAME = "hexa-event-nats"


def cluster_addresses() -> list[tuple[str, int]]:
    """(host, client port) of each node, from ``HEXA_NATS_CLUSTER_SERVERS``."""
    entries = [e.strip() for e in env("HEXA_NATS_CLUSTER_SERVERS").split(",") if e.strip()]
    if len(entries) != CLUSTER_SIZE:
        raise ValueError(
            f"HEXA_NATS_CLUSTER_SERVERS must list {CLUSTER_SIZE} host:port entries, got {entries}"
        )
    return [split_hostport(e, 14222) for e in entries]


class _OwnNats(Nats):
    """A nats-server of the harness's own, on the ports derived from its client port."""

    product = "nats"
    stop_timeout = 15.0

    @property
    def client_port(self) -> int:
        return split_hostport(self.url, 14222)[1]

    @property
    def monitor_port(self) -> int:
        return self.client_port + MONITOR_PORT_OFFSET

    @property
    def monitor_url(self) -> str:
        """The HTTP monitoring endpoint (``/jsz``, ``/varz``...)."""
        return f"http://{BIND_HOST}:{self.monitor_port}"

    @property
    def ports(self) -> list[int]:
        return [self.client_port, self.monitor_port]

    @property
    def server_name(self) -> str:
        return f"hexa-{self.name}"

    def _extra_config(self) -> str:
        return ""

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        conf = self.run_dir / "nats.conf"
        conf.write_text(
            f"listen: {BIND_HOST}:{self.client_port}\n"
            f"http: {BIND_HOST}:{self.monitor_port}\n"
            f"server_name: {self.server_name}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.data_dir))}\n"
            "  max_memory_store: 256MB\n"
            "  max_file_store: 4GB\n"
            "}\n" + self._extra_config()
        )
        return [str(self.binary), "-c", str(conf)], {}, self.run_dir, None


class NatsSolo(_OwnNats):
    name = "nats-solo"

    @property
    def url(self) -> str:
        return env("HEXA_NATS_SOLO_URL")


class NatsNode(_OwnNats):
    """Node ``index`` of the cluster (subclasses fix the index and the service name)."""

    index: ClassVar[int] = 0

    @property
    def url(self) -> str:
        host, port = cluster_addresses()[self.index - 1]
        return f"nats://{host}:{port}"

    @property
    def route_port(self) -> int:
        return self.client_port + ROUTE_PORT_OFFSET

    @property
    def ports(self) -> list[int]:
        return [*super().ports, self.route_port]

    def _extra_config(self) -> str:
        routes = ", ".join(
            f"nats-route://{BIND_HOST}:{port + ROUTE_PORT_OFFSET}"
            for _, port in cluster_addresses()
        )
        return (
            "cluster {\n"
            f"  name: {CLUSTER_NAME}\n"
            f"  listen: {BIND_HOST}:{self.route_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
        )


class NatsNode1(NatsNode):
    name = "nats-cluster-1"
    index = 1


class NatsNode2(NatsNode):
    name = "nats-cluster-2"
    index = 2


class NatsNode3(NatsNode):
    name = "nats-cluster-3"
    index = 3


NODE_CLASSES: tuple[type[NatsNode], ...] = (NatsNode1, NatsNode2, NatsNode3)
