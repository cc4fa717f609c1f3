"""The daily pipeline on a real Spark standalone cluster: ``./spark-submit.sh pipeline --env standalone`` against
a master and two workers on loopback (tests/spark_standalone.py) gives the same tables as a local-mode run on
the same landing files, and its tasks ran on the two executors of the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lakeloop import pipeline

from tests import spark_standalone
from tests.cluster_pipeline import DATA, DAY, SAME, assert_same_tables, sets

ROOT = Path(__file__).resolve().parents[1]
# two executors of one core, one on each worker, for the whole run
CLUSTER = ["spark.executor.cores=1", "spark.executor.memory=640m", "spark.cores.max=2", "spark.driver.memory=1g",
           "spark.dynamicAllocation.enabled=false", "spark.ui.enabled=false",
           *(f"spark.{p}.extraJavaOptions=-XX:+UseSerialGC -XX:TieredStopAtLevel=1" for p in ("driver", "executor"))]


@pytest.fixture
def standalone_cluster(tmp_path):
    with spark_standalone.running(tmp_path / "cluster", workers=2, cores=1, memory="1g") as cluster:
        yield cluster


def _locations(tmp_path: Path, name: str) -> list[str]:
    return [f"warehouse={tmp_path / name}", f"landing={tmp_path / 'landing'}"]


def _submit_on_cluster(cluster: spark_standalone.StandaloneCluster, tmp_path: Path) -> subprocess.Popen:
    events = tmp_path / "events"
    events.mkdir()
    log = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": f"file://{events}",
           "spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false",
           "spark.locality.wait": "0s"}  # both executors on one host: no task waits for a "local" slot
    items = [*_locations(tmp_path, "cluster-wh"), *SAME, *CLUSTER, f"spark.extra={json.dumps(log)}"]
    env = {**os.environ, "LAKELOOP_SPARK_MASTER": cluster.master_url, "LAKELOOP_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("SPARK_HOME", None)
    out = open(tmp_path / "cluster-run.log", "wb")  # noqa: SIM115 - the child holds it; closed with the test dir
    return subprocess.Popen([str(ROOT / "spark-submit.sh"), "pipeline", "--env", "standalone", "--date", DAY,
                             *sets(items)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # the driver JVM and its Python process: one group


def _event_log(tmp_path: Path) -> list[dict]:
    (path,) = (tmp_path / "events").iterdir()
    return [json.loads(line) for line in path.read_text().splitlines()]


def _assert_two_executors_did_the_work(cluster: spark_standalone.StandaloneCluster, events: list[dict]) -> None:
    (app_id,) = {e["App ID"] for e in events if e["Event"] == "SparkListenerApplicationStart"}
    added = {e["Executor ID"]: e["Executor Info"]["Host"] for e in events
             if e["Event"] == "SparkListenerExecutorAdded"}
    assert len(added) == 2 and "driver" not in added, added
    ran = {e["Task Info"]["Executor ID"] for e in events if e["Event"] == "SparkListenerTaskEnd"}
    assert ran == set(added), (ran, added)
    # the master ran the application with 2 cores; each worker launched one of its executors
    (app,) = [a for a in cluster.state()["completedapps"] if a["id"] == app_id]
    assert app["cores"] == 2 and app["state"] == "FINISHED", app
    per_worker = [[x for x in w["finishedexecutors"] + w["executors"] if x["appid"] == app_id]
                  for w in cluster.worker_states()]
    assert [len(x) for x in per_worker] == [1, 1], per_worker


@pytest.mark.slow
def test_daily_pipeline_on_a_standalone_cluster_equals_local_mode(spark, tmp_path, standalone_cluster):
    started = time.monotonic()
    assert pipeline.load_job("datagen").main(["--date", DAY, "--env", "local", "--conf-dir", str(ROOT / "conf"),
                                              *sets([*_locations(tmp_path, "local-wh"), *DATA])]) == 0
    proc = _submit_on_cluster(standalone_cluster, tmp_path)
    try:  # the local-mode reference runs in this process (the tests' local[2] session) meanwhile
        local = pipeline.load_job("pipeline").main(["--date", DAY, "--env", "local", "--conf-dir",
                                                    str(ROOT / "conf"),
                                                    *sets([*_locations(tmp_path, "local-wh"), *SAME])])
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = (tmp_path / "cluster-run.log").read_text(errors="replace")
    assert local == 0
    assert code == 0, output[-5000:] + "\n" + standalone_cluster.logs()
    names = assert_same_tables(spark, tmp_path / "local-wh", tmp_path / "cluster-wh")
    assert {"silver.events", "gold.training_set", "gold.predictions"} <= set(names), names
    _assert_two_executors_did_the_work(standalone_cluster, _event_log(tmp_path))
    print(f"standalone pipeline test: {time.monotonic() - started:.0f}s")
