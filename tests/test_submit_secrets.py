"""Help never prints the environment, and secrets never reach a command line or a dry run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lakeloop import submit
from lakeloop.conf import load_conf
from lakeloop.session import forward_env
from lakeloop.submit import PRIVATE_PROPERTIES, build_command, list_jobs

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SECRET = "s3cr3t-" + uuid.uuid4().hex
TOKEN = "t0ken-" + uuid.uuid4().hex
# what an operator sets for a YARN cluster run that passes the deploy checks
YARN_ENV = {"LAKELOOP_MLFLOW_URI": "http://mlflow.example:5000", "LAKELOOP_REDIS_HOST": "redis.example"}
# the old advice of docs/serving.md, a secret in spark.extra, plus the names to forward
SECRET_SETS = ["serving.redis.password_env=REDIS_PASSWORD", "deploy.forward_env=[LAKELOOP_TEST_TOKEN]",
               "spark.extra.spark.executorEnv.REDIS_PASSWORD=${REDIS_PASSWORD}", "deploy.shared_paths=[/shared]",
               # no registry yet: infer's runtime choice (lakeloop.runtime.model_flavours) asks no server
               "mlflow.registry_uri=sqlite:////shared/no-registry-yet.db"]


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("LAKELOOP_TEST_TOKEN", TOKEN)
    for k, v in YARN_ENV.items():
        monkeypatch.setenv(k, v)


def assert_clean(text: str) -> None:
    assert SECRET not in text and TOKEN not in text
    assert "PATH=" not in text and "LAKELOOP_TEST_TOKEN=" not in text  # no environment dump


def run_wrapper(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAKELOOP_PYTHON": sys.executable}
    return subprocess.run([str(ROOT / "spark-submit.sh"), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_wrapper_help_prints_options_not_the_environment(secrets):
    for args in (["--help"], ["-h"], ["--env", "yarn", "--help"]):
        res = run_wrapper(*args)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("usage: spark-submit.sh JOB")
        assert "--dry-run" in res.stdout and "jobs: " + " ".join(list_jobs()) in res.stdout
        assert_clean(res.stdout + res.stderr)


def test_job_help_through_the_wrapper(secrets):
    res = run_wrapper("train", "--env", "yarn", "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: train ")
    assert "--backend" in res.stdout and "--date" in res.stdout
    assert_clean(res.stdout + res.stderr)


@pytest.mark.parametrize("job", list_jobs())
def test_every_job_help_and_dry_run_hide_the_secrets(job, secrets, capsys):
    assert submit.main([job, "--help"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"usage: {job} "), out.err
    assert_clean(out.out + out.err)
    for env, extra in (("local", []), ("yarn", ["--set", "spark.submit.deployMode=client"]), ("yarn", [])):
        sets = [x for s in SECRET_SETS for x in ("--set", s)] + extra
        job_args = ["--date", "2026-11-22"] + (["--state-dir", "/shared/state"] if job in ("pipeline", "demo") else [])
        rc = submit.main([job, "--env", env, *sets, "--dry-run", *job_args])
        out = capsys.readouterr()
        assert_clean(out.out + out.err)
        if job == "serve" and env == "yarn":
            assert rc == 2 and "serve is a plain Python service" in out.err
            continue
        assert rc == 0, out.err
        cmd = build_command(job, env, SECRET_SETS + extra[1:], job_args, conf_dir=CONF, check_files=False)
        assert not any(SECRET in a or TOKEN in a for a in cmd.argv)
        assert not any(SECRET in v or TOKEN in v for v in cmd.env.values())


def test_cluster_mode_secrets_go_to_a_private_properties_file(secrets, tmp_path):
    cmd = build_command("infer", "yarn", SECRET_SETS, ["--date", "2026-11-22"], conf_dir=CONF, check_files=False)
    assert cmd.private["spark.yarn.appMasterEnv.REDIS_PASSWORD"] == SECRET
    assert cmd.private["spark.yarn.appMasterEnv.LAKELOOP_TEST_TOKEN"] == TOKEN
    # the variables the conf files refer to reach the driver too, so it resolves the same conf
    assert cmd.private["spark.yarn.appMasterEnv.LAKELOOP_MLFLOW_URI"] == "http://mlflow.example:5000"
    assert cmd.private["spark.executorEnv.REDIS_PASSWORD"] == SECRET  # moved off the argv
    assert cmd.argv[cmd.argv.index("--properties-file") + 1] == PRIVATE_PROPERTIES
    assert "spark.yarn.appMasterEnv.REDIS_PASSWORD" in cmd.render() and SECRET not in cmd.render()
    # the file launch() writes: the user's only, spark-defaults.conf kept (--properties-file replaces it)
    spark_home = tmp_path / "spark"
    (spark_home / "conf").mkdir(parents=True)
    (spark_home / "conf" / "spark-defaults.conf").write_text("spark.eventLog.enabled true\n")
    text = submit._properties_text({"a.b": "x\\y=z", **cmd.private}, spark_home)
    assert text.startswith("spark.eventLog.enabled true\n")
    assert f"spark.yarn.appMasterEnv.REDIS_PASSWORD={SECRET}\n" in text and "a.b=x\\\\y=z\n" in text


def test_client_mode_leaves_secrets_to_the_session_builder(secrets):
    cmd = build_command("infer", "yarn", [*SECRET_SETS, "spark.submit.deployMode=client"], [], conf_dir=CONF,
                        check_files=False)
    assert cmd.private == {} and "--properties-file" not in cmd.argv
    assert not any(a.startswith("spark.executorEnv.REDIS_PASSWORD") for a in cmd.argv)
    conf = load_conf("yarn", [*SECRET_SETS, "spark.submit.deployMode=client"], CONF)

    class Builder:
        def __init__(self) -> None:
            self.options: dict[str, str] = {}

        def config(self, key: str, value: str) -> Builder:
            self.options[key] = value
            return self

    import logging

    options = forward_env(conf, Builder(), logging.getLogger("test")).options
    assert options["spark.executorEnv.REDIS_PASSWORD"] == SECRET
    assert options["spark.executorEnv.LAKELOOP_TEST_TOKEN"] == TOKEN
    assert "executorEnv\\.LAKELOOP_TEST_TOKEN" in options["spark.redaction.regex"]


def test_private_file_is_0600_and_removed_after_the_run(secrets, tmp_path):
    """launch() with a fake spark-submit that records the properties file it was given."""
    fake = tmp_path / "bin" / "spark-submit"
    fake.parent.mkdir()
    record = tmp_path / "record.txt"
    fake.write_text(f"#!/bin/sh\nf=$(echo \"$@\" | sed 's/.*--properties-file \\([^ ]*\\).*/\\1/')\n"
                    f"stat -c %a \"$f\" > {record}; echo \"$f\" >> {record}; cat \"$f\" >> {record}; exit 0\n")
    fake.chmod(0o755)
    cmd = submit.SubmitCommand({}, [str(fake), "--properties-file", PRIVATE_PROPERTIES, "x.py"],
                               private={"spark.yarn.appMasterEnv.REDIS_PASSWORD": SECRET}, status_uri=None)
    assert submit.launch(cmd) == 0
    mode, path, *content = record.read_text().splitlines()
    assert mode == "600"
    assert f"spark.yarn.appMasterEnv.REDIS_PASSWORD={SECRET}" in content
    assert not Path(path).exists()  # removed with its 0700 folder
