"""A throwaway Apache Kafka broker (KRaft, combined broker + controller) on loopback for tests and benchmarks.

``KafkaBroker`` writes a ``server.properties`` into a temporary folder, formats the storage with
``kafka.tools.StorageTool``, starts ``kafka.Kafka`` from the jars ``./setup.sh jvm`` fetched
(``jars/kafka-broker``), waits until the broker accepts connections and stops it by PID on exit.
``create_topic`` and ``produce`` use the broker's own command-line tools.  Test modules import the
``kafka_broker`` fixture from here; it skips with a message naming the setup step when the jars are missing.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
from lakeloop.jvm import kafka_broker_jars

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


class KafkaBroker:
    """``with KafkaBroker() as broker: broker.bootstrap``: one KRaft node on 127.0.0.1."""

    def __init__(self, directory: str | Path | None = None) -> None:
        jars = kafka_broker_jars()
        if not jars:
            raise RuntimeError(MISSING)
        self.classpath = os.pathsep.join(str(j) for j in jars)
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="kafka-")
        self.directory = Path(directory or self._tmp.name)
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

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

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may take a free port before the broker binds it
            self.port, controller = free_port(), free_port()
            props = self._properties(controller)
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            self._run_tool("kafka.tools.StorageTool", ["format", f"--cluster-id={cluster_id}", "-c", str(props),
                                                       "--ignore-formatted"])
            with open(self.log_file, "ab") as log:
                self.process = subprocess.Popen([_java(), *self._java_options, "-cp", self.classpath, "kafka.Kafka",
                                                 str(props)], stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError(f"the Kafka broker did not start; see {self.log_file}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                self._run_tool("org.apache.kafka.tools.TopicCommand",
                               ["--bootstrap-server", self.bootstrap, "--list"], timeout=30)
                return True
            except (RuntimeError, subprocess.TimeoutExpired):
                time.sleep(0.5)
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

    def stop(self) -> None:
        """Stop the broker by its PID: SIGTERM (a clean shutdown), SIGKILL after 20 s."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A Kafka broker for the whole test session; the test is skipped when the jars are missing."""
    if not kafka_broker_jars():
        pytest.skip(MISSING)
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker
