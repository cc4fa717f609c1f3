"""A mini HDFS + YARN cluster on loopback for the tests, from the jars ``./setup.sh jvm`` fetched.

:func:`running` starts ``scripts/jvm/yarn-cluster/MiniCluster.java`` (compiled into ``jars/yarn-cluster/classes``
by ``scripts/jvm/fetch.sh``) in a JVM of its own, in a session of its own: a MiniDFSCluster (one name node,
one data node) and a MiniYARNCluster (one resource manager, ``node_managers`` node managers of ``memory_mb`` and
``vcores`` each).  It waits for the launcher's ready line, which comes once ``core-site.xml``, ``hdfs-site.xml``
and ``yarn-site.xml`` are written into ``<base>/conf`` (the ``HADOOP_CONF_DIR`` of the clients), and stops the
launcher's session by its PID when the block ends, also when it ends with an error: SIGTERM (its shutdown hook
stops YARN, whose node managers stop the containers they launched, each in a session of its own, then HDFS),
SIGKILL to what is left after 30 s.  The cluster's own data, container work folders and container logs
are under ``<base>/work``, its output in ``<base>/cluster.log``.  The ``yarn_cluster`` fixture skips with the
setup step to run when the jars are missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lakeloop.jvm import jars_dir

from tests.spark_standalone import get_json

__all__ = ["YarnCluster", "running", "launcher_classpath", "MISSING", "yarn_cluster"]

MISSING = ("the mini YARN cluster's jars are missing (jars/yarn-cluster with classes/MiniCluster.class); fetch "
           "them with ./setup.sh jvm (Apache Maven, Maven Central and a JDK's javac needed)")
JAVA_OPTIONS = ["-Xms256m", "-Xmx1g", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
READY = re.compile(r"^MiniCluster ready fs=(\S+) rm=(\S+) web=(\S+)")
# the daemons' warnings and errors only: their INFO lines would cost more time than the jobs' own
_LOG4J = """\
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_ERR
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n
"""


def launcher_classpath(jars: Path | None = None) -> list[Path]:
    """The launcher's classpath (``jars/yarn-cluster/*.jar`` and its ``classes``); empty when not fetched."""
    folder = jars or jars_dir() / "yarn-cluster"
    if not (folder / "classes" / "MiniCluster.class").is_file():
        return []
    return [*sorted(folder.glob("*.jar")), folder / "classes"]


def java_home() -> str:
    """``$JAVA_HOME``, else the installation of the ``java`` on PATH: containers start ``$JAVA_HOME/bin/java``."""
    home = os.environ.get("JAVA_HOME")
    if home:
        return home
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java not found: the mini YARN cluster needs Java 17 or newer")
    return str(Path(java).resolve().parent.parent)


@dataclass
class YarnCluster:
    """A running cluster: ``conf_dir`` (HADOOP_CONF_DIR), the default file system, the resource manager."""

    conf_dir: Path
    fs: str
    rm_address: str
    web: str
    work: Path
    log: Path
    process: subprocess.Popen

    def env(self) -> dict[str, str]:
        """The variables a client (spark-submit) needs: ``HADOOP_CONF_DIR`` and ``YARN_CONF_DIR``."""
        return {"HADOOP_CONF_DIR": str(self.conf_dir), "YARN_CONF_DIR": str(self.conf_dir)}

    def applications(self) -> list[dict]:
        """The resource manager's applications (``/ws/v1/cluster/apps``)."""
        apps = get_json(f"{self.web}/ws/v1/cluster/apps").get("apps") or {}
        return apps.get("app", [])

    def nodes(self) -> list[dict]:
        """The node managers registered with the resource manager (``/ws/v1/cluster/nodes``)."""
        nodes = get_json(f"{self.web}/ws/v1/cluster/nodes").get("nodes") or {}
        return nodes.get("node", [])

    def container_log_dirs(self, app_id: str) -> list[Path]:
        """Where the node managers keep the logs of ``app_id``'s containers: ``<log dir>/<app id>/<container>``
        (``yarn.nodemanager.log-dirs``; MiniYARNCluster's are ``target/**/yarn-logDir-nm-<n>_<i>``)."""
        return sorted(p for p in self.work.glob(f"target/**/yarn-logDir-nm-*/{app_id}/container_*") if p.is_dir())

    def put(self, local: Path, target: str) -> str:
        """Copy ``local`` to ``target`` on HDFS (Hadoop's ``FsShell -put``, readable by all); the file's URI."""
        classpath = os.pathsep.join(str(p) for p in [self.conf_dir, *launcher_classpath()])
        parent = target.rsplit("/", 1)[0] or "/"
        for args in (["-mkdir", "-p", parent], ["-put", "-f", str(local), target], ["-chmod", "644", target]):
            subprocess.run([str(Path(java_home()) / "bin" / "java"), *JAVA_OPTIONS, "-cp", classpath,
                            "org.apache.hadoop.fs.FsShell", *args], check=True, capture_output=True)
        return f"{self.fs}{target}"

    def tail(self, lines: int = 40) -> str:
        """The last lines of the cluster's own output, for an assertion message."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(proc: subprocess.Popen, log: Path, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            m = READY.match(line)
            if m:
                return m
        if proc.poll() is not None:
            raise RuntimeError(f"the mini YARN cluster exited with code {proc.returncode}:\n"
                               + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        time.sleep(0.5)
    raise TimeoutError(f"the mini YARN cluster was not ready after {timeout}s; see {log}")


def _wait_for_nodes(cluster: YarnCluster, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if len([n for n in cluster.nodes() if n.get("state") == "RUNNING"]) >= count:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{count} node manager(s) not RUNNING at {cluster.web} after {timeout}s:\n{cluster.tail()}")


def _stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the launcher's session (its shutdown hook stops YARN and HDFS), then SIGKILL to what is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # containers (their JVMs and Python workers) left in the session
    proc.wait()


@contextlib.contextmanager
def running(base: Path, node_managers: int = 1, memory_mb: int = 8192, vcores: int = 8,
            timeout: float = 180) -> Iterator[YarnCluster]:
    """HDFS and YARN on loopback until the block ends; yields the :class:`YarnCluster`."""
    classpath = launcher_classpath()
    if not classpath:
        raise RuntimeError(MISSING)
    work, conf_dir, log = base / "work", base / "conf", base / "cluster.log"
    work.mkdir(parents=True, exist_ok=True)
    (base / "log4j2.properties").write_text(_LOG4J)
    home = java_home()
    argv = [str(Path(home) / "bin" / "java"), *JAVA_OPTIONS, f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
            "-cp", os.pathsep.join(str(p) for p in classpath), "MiniCluster", str(conf_dir),
            str(node_managers), str(memory_mb), str(vcores)]
    env = {k: v for k, v in os.environ.items() if k not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
    env["JAVA_HOME"] = home  # the node managers pass it on to the containers
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        m = _wait_ready(proc, log, timeout)
        cluster = YarnCluster(conf_dir, m.group(1), m.group(2), m.group(3), work, log, proc)
        _wait_for_nodes(cluster, node_managers, timeout)
        yield cluster
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def yarn_cluster(tmp_path_factory):
    """A mini HDFS + YARN cluster for the module's tests; skipped when ``./setup.sh jvm`` has not fetched it."""
    if not launcher_classpath():
        pytest.skip(MISSING)
    with running(tmp_path_factory.mktemp("yarn")) as cluster:
        yield cluster
