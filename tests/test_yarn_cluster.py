"""The daily pipeline on a real (mini) YARN cluster: ``./spark-submit.sh pipeline --env yarn`` in client and in
cluster deploy mode against HDFS and YARN on loopback (tests/yarn_cluster.py), with the Python environment of
``scripts/pack-env.sh`` shipped with ``--archives``, gives the same tables as a local-mode run on the same
landing files; the job's own exit code comes back in both modes (a drift gate failure in cluster mode as 3), and
the application's logs are in the node manager's log folders (docs/deploy.md, checklist: YARN)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lakeloop import pipeline

from tests.cluster_pipeline import DATA, DAY, SAME, assert_same_tables, sets
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.server_process import wait_or_kill

if TYPE_CHECKING:
    from tests.yarn_cluster import YarnCluster

pytest_plugins = ["tests.yarn_cluster"]

ROOT = Path(__file__).resolve().parents[1]
NEXT_DAY = "2026-11-04"
ARCHIVE = ROOT / "build" / "lakeloop-env.tar.gz"  # python.archive of conf/yarn.yaml
NO_ARCHIVE = f"{ARCHIVE} is missing: build it with EXTRAS=redis scripts/pack-env.sh (docs/deploy.md, YARN)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ARCHIVE.is_file(), reason=NO_ARCHIVE)]
# one application master and two executors of one core; Spark's jars are read where the pip-installed pyspark
# has them (local: every node manager of this one host sees them) instead of being uploaded for each run
SIZES = ["spark.driver.memory=1g", "spark.executor.cores=1", "spark.executor.memory=640m",
         "spark.executor.memoryOverhead=384m", "spark.executor.instances=2", "spark.dynamicAllocation.enabled=false",
         "spark.ui.enabled=false", "spark.sql.shuffle.partitions=4",
         *(f"spark.{p}.extraJavaOptions=-XX:+UseSerialGC -XX:TieredStopAtLevel=1" for p in ("driver", "executor"))]


def _spark_jars() -> str:
    import pyspark

    return f"local:{Path(pyspark.__file__).resolve().parent / 'jars'}/*"


def _reachable_redis(base: Path) -> RedisServer:
    """A redis-server on the address this host's name resolves to: what executors on other hosts would use."""
    server = RedisServer(base)
    server.host = socket.gethostbyname(socket.gethostname())
    return server.start()


def _yarn_sets(shared: Path, run: str, redis: RedisServer, mode: str, archive: str) -> list[str]:
    """The conf of one YARN run: everything on the shared folder, the serving store on the Redis server."""
    extra = {"spark.yarn.jars": _spark_jars(), "spark.yarn.am.memory": "512m"}
    return [f"warehouse=file://{shared / run}", f"landing=file://{shared / 'landing'}", f"python.archive={archive}",
            f"deploy.shared_paths=[{json.dumps(str(shared))}]",
            f"mlflow.tracking_uri=sqlite:///{shared / run / 'mlflow.db'}",
            f"serving.redis.host={socket.gethostname()}", f"serving.redis.port={redis.port}",
            f"serving.namespace={run}", f"spark.submit.deployMode={mode}", *SIZES, f"spark.extra={json.dumps(extra)}"]


def _submit(cluster: YarnCluster, shared: Path, job: str, day: str, items: list[str], log: str) -> subprocess.Popen:
    env = {**os.environ, **cluster.env(), "LAKELOOP_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("SPARK_HOME", None)
    out = open(shared / log, "wb")  # noqa: SIM115 - the child holds it; closed with the test dir
    return subprocess.Popen([str(ROOT / "spark-submit.sh"), job, "--env", "yarn", "--date", day, *sets(items)],
                            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)



def _application(cluster: YarnCluster, mode: str, name: str) -> dict:
    """The YARN application ``lakeloop-<name>`` run in ``mode`` (the name the wrapper gives it: job and date)."""
    apps = [a for a in cluster.applications() if a["name"] == f"lakeloop-{name}"
            and (mode == "cluster") == bool(a.get("applicationTags"))]
    assert len(apps) == 1, apps
    return apps[0]


def _container_logs(cluster: YarnCluster, app_id: str) -> dict[str, str]:
    """``container/file`` -> text of every log file the node manager kept for ``app_id``."""
    dirs = cluster.container_log_dirs(app_id)
    assert dirs, f"no container log folders of {app_id} under {cluster.work}"
    return {f"{d.name}/{f.name}": f.read_text(errors="replace") for d in dirs for f in d.iterdir() if f.is_file()}


def _driver_logs(cluster: YarnCluster, app: dict, containers: int = 3) -> dict[str, str]:
    """The log files of ``app``'s driver, in cluster deploy mode the first container (the application master):
    its stdout and stderr, and lakeloop's ``spark-driver.log`` in the same folder; ``containers``: with the
    executors'."""
    logs = _container_logs(cluster, app["id"])
    assert len({n.split("/")[0] for n in logs}) == containers, sorted(logs)
    am = {n.split("/")[1]: text for n, text in logs.items() if n.split("/")[0].endswith("_000001")}
    assert {"stdout", "stderr", "spark-driver.log"} <= set(am), sorted(logs)
    assert "SparkContext: Running Spark version" in am["spark-driver.log"]
    return am


@pytest.fixture
def redis_on_host(tmp_path):
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = _reachable_redis(tmp_path / "redis")
    yield server
    server.stop()


def _output(shared: Path, log: str) -> str:
    return (shared / log).read_text(errors="replace")


def test_daily_pipeline_on_yarn_client_and_cluster_mode_equals_local_mode(spark, tmp_path, yarn_cluster,
                                                                          redis_on_host):
    started = time.monotonic()
    local = ["warehouse=" + str(tmp_path / "local-wh"), "landing=" + str(tmp_path / "landing")]
    conf_dir = ["--env", "local", "--conf-dir", str(ROOT / "conf")]
    for day in (DAY, NEXT_DAY):  # the next day's landing files: the drift gate's run below
        assert pipeline.load_job("datagen").main(["--date", day, *conf_dir, *sets([*local, *DATA])]) == 0
    # once on HDFS, readable by all: the node manager localizes it once, into its public cache, for every run
    archive = yarn_cluster.put(ARCHIVE, f"/lakeloop/{ARCHIVE.name}")
    runs = {mode: [*_yarn_sets(tmp_path, f"{mode}-wh", redis_on_host, mode, archive), *SAME]
            for mode in ("client", "cluster")}
    procs = {mode: _submit(yarn_cluster, tmp_path, "pipeline", DAY, items, f"{mode}.log")
             for mode, items in runs.items()}
    try:  # the local-mode reference runs in this process (the tests' local[2] session) meanwhile
        assert pipeline.load_job("pipeline").main(["--date", DAY, *conf_dir, *sets([*local, *SAME])]) == 0
    finally:
        codes = {mode: wait_or_kill(proc, 600) for mode, proc in procs.items()}
    print(f"yarn test: both deploy modes done after {time.monotonic() - started:.0f}s")
    assert codes["client"] == 0, _output(tmp_path, "client.log")[-5000:]
    output = _output(tmp_path, "cluster.log")
    assert codes["cluster"] == 0, output[-5000:]
    assert "spark-submit.sh: pipeline exit code 0 (spark-submit: 0)" in output, output[-3000:]
    for mode in ("client", "cluster"):
        names = assert_same_tables(spark, tmp_path / "local-wh", tmp_path / f"{mode}-wh")
        assert {"silver.events", "gold.training_set", "gold.predictions"} <= set(names), names
    app = _application(yarn_cluster, "cluster", f"pipeline-{DAY}")
    assert app["finalStatus"] == "SUCCEEDED", app
    assert f"pipeline: {DAY} infer     ok" in _driver_logs(yarn_cluster, app)["stdout"]

    # a drift gate failure in cluster mode: the next day against this one, with a PSI threshold that the sampling
    # noise between two days is above; the pipeline stops at validate with exit code 3
    drift = [*runs["cluster"], "validate.enabled=true", "validate.reference=pinned",
             f'validate.reference_date="{DAY}"', "validate.psi_threshold=0.000001"]
    code = wait_or_kill(_submit(yarn_cluster, tmp_path, "pipeline", NEXT_DAY, drift, "drift.log"), 600)
    output = _output(tmp_path, "drift.log")
    assert code == 3, output[-5000:]
    assert "spark-submit.sh: pipeline exit code 3 (spark-submit: 1)" in output, output[-3000:]
    app = _application(yarn_cluster, "cluster", f"pipeline-{NEXT_DAY}")
    assert app["finalStatus"] == "FAILED", app
    # what the driver printed is in its container's stdout: the step that failed, the drifted columns
    assert f"pipeline: {NEXT_DAY} validate  failed  rc=3" in _driver_logs(yarn_cluster, app)["stdout"]
    print(f"yarn test: {time.monotonic() - started:.0f}s")
