"""Cluster-mode safety (lakeloop.deploy_checks) and the job status round trip (lakeloop.job_status)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lakeloop import deploy_checks, job_status
from lakeloop.conf import ConfError, load_conf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SERVERS = ["mlflow.tracking_uri=http://mlflow.example:5000", "serving.redis.host=redis.example"]


def problems(env: str, sets: list[str], job: str, state_dir: str | None = None) -> list[str]:
    return deploy_checks.problems(load_conf(env, sets, CONF), job, state_dir)


def test_yarn_cluster_mode_with_the_defaults_names_the_keys_to_set(monkeypatch):
    for name in ("LAKELOOP_MLFLOW_URI", "LAKELOOP_REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    found = "\n".join(problems("yarn", [], "pipeline"))
    assert "mlflow.tracking_uri: sqlite:///hdfs:///lakeloop/warehouse/_mlflow/mlflow.db" in found
    assert "serving.redis.host: not set" in found
    assert "--state-dir" in found and "deploy.shared_paths" in found
    assert problems("yarn", ["serving.store=sqlite", *SERVERS], "infer") == [
        "serving.store: sqlite works within one host only and YARN cluster deploy mode runs executors on many "
        "hosts (they write the serving store); set serving.store=redis and serving.redis.host"]
    with pytest.raises(ConfError, match=r"(?s)train refused \(YARN cluster deploy mode\):\n  - mlflow.tracking_uri"):
        deploy_checks.enforce(load_conf("yarn", [], CONF), "train")


def test_yarn_cluster_mode_with_shared_state_and_servers_may_run(tmp_path):
    shared = tmp_path / "nfs"
    sets = [*SERVERS, f"deploy.shared_paths=[{shared}]"]
    assert problems("yarn", sets, "pipeline", str(shared / "state")) == []
    assert problems("yarn", sets, "ingest") == []
    # a state folder on the container's disk, an MLflow SQLite file there, a server on loopback: refused
    assert problems("yarn", sets, "pipeline", str(tmp_path / "local"))[0].startswith(f"--state-dir: {tmp_path}/local")
    assert "driver's disk" in problems("yarn", [*sets, f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"], "train")[0]
    assert problems("yarn", [*sets, f"mlflow.tracking_uri=sqlite:///{shared}/m.db"], "train") == []
    assert "loopback" in problems("yarn", [*sets, "mlflow.tracking_uri=http://127.0.0.1:5000"], "infer")[0]
    assert "loopback" in problems("yarn", [*sets, "serving.redis.host=localhost"], "infer")[0]
    assert problems("yarn", [*sets, f"warehouse={tmp_path}/wh"], "curate")[0].startswith(f"warehouse: {tmp_path}/wh")


def test_client_mode_keeps_driver_state_local_but_executors_need_shared_storage(tmp_path):
    client = ["spark.submit.deployMode=client", "serving.redis.host=redis.example"]
    assert problems("yarn", [*client, f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db"], "train") == []
    assert problems("yarn", client + ["mlflow.tracking_uri=http://127.0.0.1:5000"], "pipeline", str(tmp_path)) == []
    found = problems("yarn", [*client, f"mlflow.artifact_root={tmp_path}/a"], "infer")
    assert any("mlflow.artifact_root" in p for p in found), found


def test_standalone_on_loopback_is_one_host_and_on_a_network_it_is_not(tmp_path):
    local = [f"warehouse={tmp_path}/wh", f"landing={tmp_path}/landing"]
    assert problems("standalone", ["spark.master=spark://127.0.0.1:7077", *local], "pipeline") == []
    assert problems("local", local, "demo") == []
    found = problems("standalone", ["spark.master=spark://10.0.0.5:7077", *local], "infer")
    assert [p.split(":", 1)[0] for p in found] == ["warehouse", "mlflow.artifact_root", "serving.store"]
    assert "not supported by Spark for Python applications" in problems(
        "standalone", ["spark.master=spark://10.0.0.5:7077", "spark.submit.deployMode=cluster"], "ingest")[0]


def test_serve_is_refused_on_yarn_only():
    assert "plain Python service, not a YARN application" in problems("yarn", [], "serve")[0]
    assert problems("local", [], "serve") == []


def test_run_job_refuses_before_spark_starts(capsys, monkeypatch):
    monkeypatch.delenv("LAKELOOP_MLFLOW_URI", raising=False)
    from lakeloop.pipeline import load_job

    assert load_job("train").main(["--env", "yarn", "--conf-dir", str(CONF), "--date", "2026-11-22"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train: train refused (YARN cluster deploy mode)") and "mlflow.tracking_uri" in err


def test_wrapper_refuses_with_exit_2(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k not in ("LAKELOOP_MLFLOW_URI", "LAKELOOP_REDIS_HOST")}
    res = subprocess.run([str(ROOT / "spark-submit.sh"), "infer", "--env", "yarn", "--dry-run"], cwd=ROOT,
                         env={**env, "LAKELOOP_PYTHON": sys.executable}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert "infer refused (YARN cluster deploy mode)" in res.stderr and "serving.redis.host" in res.stderr


# -- the status round trip ---------------------------------------------------------------------------------------
FAKE_SPARK_SUBMIT = '''\
#!{python}
"""spark-submit in YARN cluster deploy mode, simulated: the driver runs in a fresh "container" folder with
only the environment YARN would give it (spark.yarn.appMasterEnv.*, from --conf and --properties-file), and
any failure of the application becomes exit code 1, as YARN's client does."""
import os, shutil, subprocess, sys, tempfile

args, props, files = sys.argv[1:], {{}}, []
i = 0
while not args[i].endswith(".py"):
    if args[i] == "--conf":
        k, v = args[i + 1].split("=", 1); props[k] = v
    elif args[i] == "--properties-file":
        for line in open(args[i + 1]):
            if "=" in line:
                k, v = line.rstrip("\\n").split("=", 1); props[k] = v
    elif args[i] == "--files":
        files = args[i + 1].split(",")
    elif args[i] == "--py-files":
        pyfiles = args[i + 1]
    i += 2 if args[i].startswith("--") else 1
container = tempfile.mkdtemp(prefix="container-")
for f in files:
    shutil.copy(f, container)
env = {{"PATH": os.environ["PATH"], "PYTHONPATH": pyfiles}}
prefix = "spark.yarn.appMasterEnv."
env.update({{k[len(prefix):]: v for k, v in props.items() if k.startswith(prefix)}})
env.pop("PYSPARK_PYTHON", None)
rc = subprocess.call([{python!r}, *args[i:]], cwd=container, env=env)
shutil.rmtree(container)
sys.exit(0 if rc == 0 else 1)
'''

FAKE_JOB = '''\
import os, signal, sys
from lakeloop import cli
from lakeloop.errors import DataQualityError, GateRefused


def _body(ctx, spark, args):
    with open(args.proof, "w") as fh:
        fh.write(os.environ.get("LAKELOOP_TEST_SECRET", "<missing>"))
    if args.outcome == "quality":
        raise DataQualityError("quarantine rate 9% > 5%")
    if args.outcome == "gate":
        raise GateRefused("challenger auc 0.61 < champion 0.64")
    if args.outcome == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


def main(argv=None):
    p = cli.job_parser("gatecheck", "status round trip test job")
    p.add_argument("--outcome", default="ok")
    p.add_argument("--proof", required=True)
    return cli.run_job("gatecheck", argv, p, _body, needs_spark=False)


if __name__ == "__main__":
    sys.exit(main())
'''


@pytest.fixture
def cluster_project(tmp_path):
    """A copy of the project with one test job, a fake SPARK_HOME and a 'shared' folder."""
    root = tmp_path / "proj"
    for part in ("lib", "conf", "schemas", "jobs"):
        shutil.copytree(ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "spark-submit.sh", root / "spark-submit.sh")
    (root / "jobs" / "gatecheck.py").write_text(FAKE_JOB)
    (root / "build").mkdir()
    (root / "build" / "env.tar.gz").write_bytes(b"")
    fake = tmp_path / "spark" / "bin" / "spark-submit"
    fake.parent.mkdir(parents=True)
    fake.write_text(FAKE_SPARK_SUBMIT.format(python=sys.executable))
    fake.chmod(0o755)
    (tmp_path / "shared").mkdir()
    return root


def submit_cluster(root: Path, outcome: str) -> tuple[subprocess.CompletedProcess, Path]:
    shared = root.parent / "shared"
    proof = shared / f"proof-{outcome}.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAKELOOP_", "PYTHONPATH"))}
    env.update(SPARK_HOME=str(root.parent / "spark"), LAKELOOP_PYTHON=sys.executable,
               LAKELOOP_WAREHOUSE=str(shared / "wh"), LAKELOOP_LANDING=str(shared / "landing"),
               LAKELOOP_MLFLOW_URI="http://mlflow.example:5000", LAKELOOP_REDIS_HOST="redis.example",
               LAKELOOP_TEST_SECRET="s3cr3t-value")
    res = subprocess.run([str(root / "spark-submit.sh"), "gatecheck", "--env", "yarn",
                          "--set", f"deploy.shared_paths=[{shared}]",
                          "--set", "deploy.forward_env=[LAKELOOP_TEST_SECRET]",
                          "--set", "python.archive=build/env.tar.gz", "--outcome", outcome, "--proof", str(proof)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=120)
    return res, proof


@pytest.mark.parametrize(("outcome", "code"), [("ok", 0), ("quality", 3), ("gate", 4)])
def test_cluster_mode_returns_the_jobs_own_exit_code(cluster_project, outcome, code):
    res, proof = submit_cluster(cluster_project, outcome)
    assert res.returncode == code, res.stderr
    assert f"spark-submit.sh: gatecheck exit code {code} (spark-submit: {min(code, 1)})" in res.stderr
    # the forwarded variable reached the driver through the 0600 properties file, never the argv
    assert proof.read_text() == "s3cr3t-value"
    status = cluster_project.parent / "shared" / "wh" / "_state" / "status"
    assert list(status.glob("*.json")) == []  # read, then removed


def test_cluster_mode_without_a_status_file_returns_spark_submits_code(cluster_project):
    res, _ = submit_cluster(cluster_project, "killed")
    assert res.returncode == 1
    assert "no job status at " in res.stderr and "exit code 1 of spark-submit" in res.stderr


def test_status_decorator_records_the_outermost_code_and_usage_errors(tmp_path, monkeypatch):
    uri = str(tmp_path / "s.json")
    monkeypatch.setenv(job_status.ENV_VAR, uri)

    @job_status.reporting
    def run(job: str, code: int, inner: int | None = None) -> int:
        if inner is not None:
            run("inner", inner)
        if code == 2:
            raise SystemExit(2)
        return code

    assert run("outer", 4, inner=0) == 4
    assert json.loads(Path(uri).read_text())["exit_code"] == 4
    with pytest.raises(SystemExit):
        run("outer", 2)
    assert job_status.read_status(uri)["exit_code"] == 2
    job_status.remove_status(uri)
    assert job_status.read_status(uri) is None


def test_status_through_hadoop_filesystem(spark, tmp_path, monkeypatch):
    """The path used for hdfs:// and object stores: the driver JVM's Hadoop FileSystem, FsShell to read back and
    delete, with no Hadoop configuration on the client (pip-installed pyspark, no HADOOP_CONF_DIR)."""
    for name in ("HADOOP_CONF_DIR", "YARN_CONF_DIR", "SPARK_DIST_CLASSPATH", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    uri = f"file://{tmp_path}/status/x.json"
    job_status._hadoop_write(uri, json.dumps({"job": "t", "exit_code": 3}).encode(), jvm=spark._jvm)
    assert json.loads((tmp_path / "status" / "x.json").read_text())["exit_code"] == 3
    assert json.loads(job_status._hadoop_read(uri))["exit_code"] == 3
    job_status._fs_shell(["-rm", "-f", uri])
    assert not (tmp_path / "status" / "x.json").exists()
    assert job_status._hadoop_read(uri) is None
