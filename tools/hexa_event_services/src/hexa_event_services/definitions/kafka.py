"""Kafka: one KRaft node (broker and controller), jars from Maven Central."""

from __future__ import annotations

import base64
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import ClassVar

from ..config import (
    BIND_HOST,
    VERSIONS,
    ServiceError,
    env,
    split_hostport,
)
from ..installers import (
    java,
    run_command,
    run_mvn,
    verify_maven_sha1,
)
from ..probes import kafka_probe
from ..supervisor import Service, wipe

_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>hexa-event.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_KAFKA_LOG4J2 = """status = warn
name = hexa-kafka
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
logger.zk.name = org.apache.kafka.raft
logger.zk.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
"""


def new_cluster_id() -> str:
    """A random KRaft cluster id (base64url of a UUID) that does not start with '-': the
    storage tool would read such an id as an option and refuse to format."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


class Kafka(Service):
    """The shared single node: broker and controller in one process, replication factor 1.

    Subclasses (the cluster's nodes, the secured broker) change the ports, the server
    properties, how storage is formatted and the probe.
    """

    name = "kafka"
    product = "kafka"
    stop_timeout = 60.0
    heap_env: ClassVar[str] = "HEXA_KAFKA_HEAP"
    default_heap: ClassVar[str] = "-Xms256m -Xmx768m"

    @property
    def url(self) -> str:
        return env("HEXA_KAFKA_BOOTSTRAP")

    @property
    def host(self) -> str:
        return split_hostport(self.url, 9092)[0]

    @property
    def port(self) -> int:
        return split_hostport(self.url, 9092)[1]

    @property
    def controller_port(self) -> int:
        return int(os.environ.get("HEXA_KAFKA_CONTROLLER_PORT") or self.port + 1)

    @property
    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def lib_dir(self) -> Path:
        return self.install_dir / "lib"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "kafka-logs"

    def _install(self) -> None:
        work = self.install_dir.with_name(self.version + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        (work / "lib").mkdir(parents=True)
        (work / "pom.xml").write_text(
            _KAFKA_POM.format(kafka=self.version, log4j=VERSIONS["kafka-log4j-slf4j"])
        )
        log = work / "install.log"
        run_mvn(
            "-f",
            str(work / "pom.xml"),
            "dependency:build-classpath",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.outputFile={work / 'classpath.txt'}",
            log=log,
        )
        jars = [Path(p) for p in (work / "classpath.txt").read_text().strip().split(":") if p]
        if not jars:
            raise ServiceError("kafka: empty classpath from maven")
        for jar in jars:
            verify_maven_sha1(jar)
            shutil.copy2(jar, work / "lib" / jar.name)
        core = work / "lib" / f"kafka_2.13-{self.version}.jar"
        with zipfile.ZipFile(core) as z:
            names = set(z.namelist())
        for cls in ("kafka/Kafka.class", "kafka/tools/StorageTool.class"):
            if cls not in names:
                raise ServiceError(f"kafka: {cls} missing from {core.name}")
        wipe(self.install_dir)
        work.replace(self.install_dir)

    def java_cmd(self, main: str, *args: str, heap: str) -> list[str]:
        """The JVM command line running ``main`` of Kafka's jars with this node's dirs."""
        return [
            java(),
            *heap.split(),
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:ParallelGCThreads=2",
            "-XX:ConcGCThreads=1",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.run_dir / 'logs'}",
            f"-Djava.io.tmpdir={self.run_dir / 'tmp'}",
            "-cp",
            str(self.lib_dir / "*"),
            main,
            *args,
        ]

    def properties(self) -> dict[str, str]:
        """server.properties of the single node."""
        h, p, c = BIND_HOST, self.port, self.controller_port
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.logs_dir),
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }

    def cluster_id(self) -> str:
        """The KRaft cluster id to format fresh storage with."""
        return new_cluster_id()

    def format_args(self) -> list[str]:
        """Extra ``kafka-storage format`` arguments (the single node is its own quorum)."""
        return ["--standalone"]

    def _prepare(self, fresh: bool) -> None:
        if fresh:
            wipe(self.data_dir)
        for d in (self.logs_dir, self.run_dir / "logs", self.run_dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in self.properties().items())
        )
        (self.run_dir / "log4j2.properties").write_text(_KAFKA_LOG4J2)
        if not (self.logs_dir / "meta.properties").is_file():
            run_command(
                self.java_cmd(
                    "kafka.tools.StorageTool",
                    "format",
                    "--cluster-id",
                    self.cluster_id(),
                    "--config",
                    str(self.run_dir / "server.properties"),
                    *self.format_args(),
                    "--ignore-formatted",
                    heap="-Xmx256m -XX:TieredStopAtLevel=1",
                ),
                log=self.log_path,
            )

    def _command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        heap = os.environ.get(self.heap_env, self.default_heap)
        argv = self.java_cmd("kafka.Kafka", str(self.run_dir / "server.properties"), heap=heap)
        return argv, {}, self.run_dir, None

    def probe(self, timeout: float = 5.0, deep: bool = True) -> None:
        kafka_probe(self.url, timeout)
