"""A Spark standalone cluster on loopback for the tests: one master and N workers of the installed pyspark.

:func:`running` starts ``spark-class org.apache.spark.deploy.master.Master`` and the workers
(``...deploy.worker.Worker``, ``cores`` and ``memory`` each) on 127.0.0.1 with free ports, waits until the
master's JSON (``http://127.0.0.1:<webui>/json``) lists every worker ALIVE, and stops them by their PIDs
when the block ends, also when it ends with an error.  Each daemon runs in a session of its own, so the
executors a worker launched are stopped with it.  The daemons' output goes to ``<base>/logs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.server_process import free_port

__all__ = ["StandaloneCluster", "running", "spark_class", "free_port"]

DAEMON_JAVA_OPTIONS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"


def spark_class() -> Path:
    """``bin/spark-class`` of the pip-installed pyspark (its SPARK_HOME)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "bin" / "spark-class"


def get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a loopback http URL
        return json.loads(response.read())


@dataclass
class StandaloneCluster:
    """A running cluster: its master URL, the master's web UI and the daemon processes (master first)."""

    master_url: str
    webui_url: str
    log_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def state(self) -> dict:
        """The master's JSON: workers, active and completed applications."""
        return get_json(f"{self.webui_url}/json")

    def worker_states(self) -> list[dict]:
        """Each worker's own JSON (its executors and finished executors)."""
        return [get_json(f"{w['webuiaddress']}/json") for w in self.state()["workers"]]

    def logs(self) -> str:
        """The last lines of every daemon's output, for an assertion message."""
        return "\n".join(f"== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
                         for p in sorted(self.log_dir.glob("*.log")))


def _daemon_env() -> dict[str, str]:
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "256m",
            "SPARK_DAEMON_JAVA_OPTS": DAEMON_JAVA_OPTIONS}


def _start(cluster: StandaloneCluster, name: str, args: list[str]) -> None:
    with open(cluster.log_dir / f"{name}.log", "wb") as log:
        proc = subprocess.Popen([str(spark_class()), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=_daemon_env(), start_new_session=True)
    cluster.processes.append(proc)


def _wait_for_workers(cluster: StandaloneCluster, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in cluster.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"a daemon exited with code {proc.returncode}:\n{cluster.logs()}")
        with contextlib.suppress(OSError, ValueError):
            alive = [w for w in cluster.state()["workers"] if w["state"] == "ALIVE"]
            if len(alive) == workers:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{workers} workers not registered with {cluster.master_url} after {timeout}s:\n"
                       f"{cluster.logs()}")


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to the daemon's PID (its shutdown hook stops its executors), then SIGKILL to its session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session (an executor it launched)
    proc.wait()


@contextlib.contextmanager
def running(base: Path, workers: int = 2, cores: int = 1, memory: str = "1g",
            timeout: float = 180) -> Iterator[StandaloneCluster]:
    """A master and ``workers`` workers on 127.0.0.1 until the block ends; yields the cluster."""
    port, webui = free_port(), free_port()
    (base / "logs").mkdir(parents=True, exist_ok=True)
    cluster = StandaloneCluster(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{webui}", base / "logs")
    try:
        _start(cluster, "master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                   "--port", str(port), "--webui-port", str(webui)])
        for i in range(workers):
            work = base / f"worker-{i}"
            work.mkdir(exist_ok=True)
            _start(cluster, f"worker-{i}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                            "--cores", str(cores), "--memory", memory, "--work-dir", str(work),
                                            "--webui-port", str(free_port()), cluster.master_url])
        _wait_for_workers(cluster, workers, timeout)
        yield cluster
    finally:
        for proc in reversed(cluster.processes):  # workers first, the master last
            _stop(proc)
