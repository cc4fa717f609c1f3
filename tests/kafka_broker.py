"""A throwaway Apache Kafka broker (KRaft, combined broker + controller) on loopback for tests and benchmarks.

``KafkaBroker`` writes a ``server.properties`` into a temporary folder, formats the storage with
``kafka.tools.StorageTool``, starts ``kafka.Kafka`` from the jars ``./setup.sh jvm`` fetched
(``jars/kafka-broker``), waits until the broker accepts connections and stops it by PID on exit
(:class:`tests.server_process.ServerProcess`).
``create_topic`` and ``produce`` use the broker's own command-line tools.  Test modules import the
``kafka_broker`` fixture from here; it skips with a message naming the setup step when the jars are missing.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
from lakeloop.jvm import kafka_broker_jars

from tests.server_process import ServerProcess, free_port

MISSING = ("the Kafka broker jars are missing (jars/kafka-broker); fetch them with ./setup.sh jvm "
           "(Apache Maven and Maven Central needed)")
JAVA_OPTIONS = ["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]

_LOG4J = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.target = SYSTEM_ERR
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
"""


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


class KafkaBroker(ServerProcess):
    """``with KafkaBroker() as broker: broker.bootstrap``: one KRaft node on 127.0.0.1."""

    name = "the Kafka broker"
    start_timeout = 90.0
    poll_interval = 0.5
    stop_timeout = 20.0

    def __init__(self, directory: str | Path | None = None) -> None:
        jars = kafka_broker_jars()
        if not jars:
            raise RuntimeError(MISSING)
        self.classpath = os.pathsep.join(str(j) for j in jars)
        super().__init__(directory, prefix="kafka-")

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.directory / "broker.log"

    def _properties(self, controller_port: int) -> Path:
        data = self.directory / "data"
        text = "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{controller_port}",
            f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.flush.interval.messages=1",
        ]) + "\n"
        path = self.directory / "server.properties"
        path.write_text(text)
        (self.directory / "log4j2.properties").write_text(_LOG4J)
        return path

    @property
    def _java_options(self) -> list[str]:
        return [*JAVA_OPTIONS, f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}"]

    def _run_tool(self, main: str, args: list[str], stdin: bytes | None = None, timeout: float = 120) -> str:
        proc = subprocess.run([_java(), *self._java_options, "-cp", self.classpath, main, *args], input=stdin,
                              capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{main} {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace')[-2000:]}")
        return proc.stdout.decode(errors="replace")

    def _launch(self) -> subprocess.Popen[bytes]:
        props = self._properties(free_port())
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._run_tool("kafka.tools.StorageTool", ["format", f"--cluster-id={cluster_id}", "-c", str(props),
                                                   "--ignore-formatted"])
        with open(self.log_file, "ab") as log:
            return subprocess.Popen([_java(), *self._java_options, "-cp", self.classpath, "kafka.Kafka", str(props)],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _answers(self) -> bool:
        try:
            self._run_tool("org.apache.kafka.tools.TopicCommand", ["--bootstrap-server", self.bootstrap, "--list"],
                           timeout=30)
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        self._run_tool("org.apache.kafka.tools.TopicCommand",
                       ["--bootstrap-server", self.bootstrap, "--create", "--topic", topic,
                        "--partitions", str(partitions), "--replication-factor", "1"])

    def produce(self, topic: str, lines: Iterable[str]) -> int:
        """Publish one record per line (values only; records are spread over the partitions); returns the count."""
        payload = [line.replace("\n", " ") for line in lines]
        self._run_tool("org.apache.kafka.tools.ConsoleProducer",
                       ["--bootstrap-server", self.bootstrap, "--topic", topic,
                        "--producer-property", "acks=all", "--producer-property", "linger.ms=5"],
                       stdin=("\n".join(payload) + "\n").encode())
        return len(payload)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A Kafka broker for the whole test session; the test is skipped when the jars are missing."""
    if not kafka_broker_jars():
        pytest.skip(MISSING)
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker
