"""spark-submit command lines for the three envs, packaging, and the shell wrapper."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from lakeloop.conf import ConfError
from lakeloop.submit import build_command, list_jobs, package_library

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@pytest.fixture
def project(tmp_path):
    """A copy of the project's lib/ with two jobs, so packaging can be observed in isolation."""
    root = tmp_path / "proj"
    shutil.copytree(ROOT / "lib" / "lakeloop", root / "lib" / "lakeloop",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "jobs").mkdir()
    for job in ("ingest", "curate"):
        (root / "jobs" / f"{job}.py").write_text("import sys\n")
    (root / "jobs" / "__init__.py").write_text("")
    return root


def conf_args(cmd) -> dict[str, str]:
    argv = cmd.argv
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")


def flag(cmd, name: str) -> str:
    return cmd.argv[cmd.argv.index(name) + 1]


def test_local_uses_pip_spark_submit_and_conf(project):
    import pyspark

    cmd = build_command("ingest", "local", ["spark.executor.memory=3g"], ["--date", "2026-11-01"],
                        conf_dir=CONF, root=project, python="/py/bin/python")
    assert cmd.argv[0] == str(Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit")
    assert flag(cmd, "--master") == "local[*]"
    assert flag(cmd, "--deploy-mode") == "client"
    assert flag(cmd, "--name") == "lakeloop-ingest-2026-11-01"
    props = conf_args(cmd)
    assert props["spark.executor.memory"] == "3g"
    assert props["spark.sql.adaptive.enabled"] == "true"
    assert props["spark.scheduler.allocation.file"] == str(CONF / "fairscheduler.xml")
    schemas = sorted(str(p) for p in (ROOT / "schemas").glob("*.yaml"))
    assert schemas and flag(cmd, "--files").split(",") == [str(CONF / "base.yaml"), str(CONF / "local.yaml"),
                                                          *schemas, str(CONF / "fairscheduler.xml")]
    assert flag(cmd, "--py-files") == str(project / "build" / "lakeloop.zip")
    assert cmd.env == {"PYSPARK_PYTHON": "/py/bin/python", "PYSPARK_DRIVER_PYTHON": "/py/bin/python"}
    tail = cmd.argv[cmd.argv.index(str(project / "jobs" / "ingest.py")):]
    # a local driver reads the conf directory it was given (not ./conf)
    assert tail == [str(project / "jobs" / "ingest.py"), "--env", "local", "--set", "spark.executor.memory=3g",
                    "--conf-dir", str(CONF.resolve()), "--date", "2026-11-01"]


def test_standalone_command(project, monkeypatch):
    monkeypatch.setenv("LAKELOOP_SPARK_MASTER", "spark://master.example:7077")
    monkeypatch.setenv("SPARK_HOME", "/opt/spark")
    cmd = build_command("curate", "standalone", [], [], conf_dir=CONF, root=project)
    assert cmd.argv[0] == "/opt/spark/bin/spark-submit"
    assert flag(cmd, "--master") == "spark://master.example:7077"
    props = conf_args(cmd)
    assert props["spark.dynamicAllocation.enabled"] == "true"
    assert props["spark.cores.max"] == "32"
    assert "--archives" not in cmd.argv


def test_yarn_cluster_ships_python_env_and_conf(project, tmp_path):
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")
    cmd = build_command("ingest", "yarn", [f"python.archive={archive}"], ["--date", "2026-11-02"],
                        conf_dir=CONF, root=project, python="/py/bin/python")
    assert flag(cmd, "--master") == "yarn"
    assert flag(cmd, "--deploy-mode") == "cluster"
    shipped = flag(cmd, "--archives").split(",")
    assert shipped[0] == f"{archive}#environment"
    # the conf folder's spec folders, one zip each, unpacked under their own names in the driver's directory
    folders = sorted(p.name for p in CONF.iterdir() if p.is_dir())
    assert folders and sorted(a.rsplit("#", 1)[1] for a in shipped[1:]) == folders
    for item in shipped[1:]:
        path, name = item.rsplit("#", 1)
        with zipfile.ZipFile(path) as zf:
            assert sorted(zf.namelist()) == sorted(str(f.relative_to(CONF / name))
                                                   for f in (CONF / name).rglob("*") if f.is_file())
    props = conf_args(cmd)
    assert props["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert props["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    assert props["spark.yarn.queue"] == "default"
    # the driver runs in the cluster: the pools file and conf are read from its working directory
    assert props["spark.scheduler.allocation.file"] == "fairscheduler.xml"
    assert cmd.argv[-4:] == ["--conf-dir", ".", "--date", "2026-11-02"]
    assert "PYSPARK_DRIVER_PYTHON" not in cmd.env


def test_yarn_client_mode_keeps_local_driver_python(project, tmp_path):
    cmd = build_command("ingest", "yarn", ["spark.submit.deployMode=client", f"python.archive={tmp_path}/e.tgz"],
                        [], conf_dir=CONF, root=project, python="/py/bin/python", check_files=False)
    assert flag(cmd, "--deploy-mode") == "client"
    assert flag(cmd, "--archives") == f"{tmp_path}/e.tgz#environment"  # the driver reads ./conf here
    assert cmd.env["PYSPARK_DRIVER_PYTHON"] == "/py/bin/python"
    assert cmd.argv[cmd.argv.index("--conf-dir") + 1] == str(CONF.resolve())  # the client-mode driver is here


def test_missing_python_archive_is_a_clear_error(project):
    with pytest.raises(ConfError, match=r"python.archive: .*build/lakeloop-env.tar.gz not found; build it with "
                                        r"scripts/pack-env.sh"):
        build_command("ingest", "yarn", [], [], conf_dir=CONF, root=project)
    cmd = build_command("ingest", "yarn", [], [], conf_dir=CONF, root=project, check_files=False)
    assert flag(cmd, "--archives").split(",")[0] == f"{project}/build/lakeloop-env.tar.gz#environment"


def test_gpu_settings_ship_the_discovery_script(project):
    cmd = build_command("ingest", "yarn", ["gpu.enabled=true", "gpu.executor_amount=2"], [], conf_dir=CONF,
                        root=project, check_files=False)
    props = conf_args(cmd)
    assert props["spark.executor.resource.gpu.amount"] == "2"
    assert props["spark.task.resource.gpu.amount"] == "1"
    assert props["spark.executor.resource.gpu.discoveryScript"] == "./get_gpus_resources.sh"
    assert flag(cmd, "--files").endswith("lakeloop/resources/get_gpus_resources.sh")


def test_unknown_job_and_bad_conf(project):
    with pytest.raises(LookupError, match="unknown job 'nope'; jobs: curate, ingest"):
        build_command("nope", "local", conf_dir=CONF, root=project)
    with pytest.raises(ConfError, match="unknown key 'spark.executor.memroy'"):
        build_command("ingest", "local", ["spark.executor.memroy=1g"], conf_dir=CONF, root=project)
    assert list_jobs(project) == ["curate", "ingest"]


def test_library_zip_is_rebuilt_only_when_sources_change(project):
    z = package_library(project)
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
    assert "lakeloop/conf.py" in names and not any("__pycache__" in n for n in names)
    mtime = z.stat().st_mtime_ns
    os.utime(project / "lib" / "lakeloop" / "conf.py")  # touched, same content
    assert package_library(project).stat().st_mtime_ns == mtime
    with open(project / "lib" / "lakeloop" / "conf.py", "a") as fh:
        fh.write("\n# changed\n")
    z2 = package_library(project)
    assert z2.stat().st_mtime_ns != mtime
    with zipfile.ZipFile(z2) as zf:
        assert zf.read("lakeloop/conf.py").endswith(b"# changed\n")


def run_wrapper(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LAKELOOP_PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(ROOT / "spark-submit.sh"), *args], capture_output=True, text=True, env=full_env,
                          cwd=ROOT, timeout=60)


def test_wrapper_unknown_job_lists_jobs_and_exits_2():
    res = run_wrapper("no-such-job")
    assert res.returncode == 2
    assert "unknown job 'no-such-job'" in res.stderr
    assert "demo" in res.stderr.split("jobs:", 1)[1]


@pytest.mark.parametrize("env", ["local", "standalone", "yarn"])
def test_wrapper_dry_run_prints_command(env):
    res = run_wrapper("ingest", "--env", env, "--dry-run", "--date", "2026-11-01")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip()
    assert "spark-submit --master" in line
    assert f"jobs/ingest.py --env {env}" in line
    assert "--name lakeloop-ingest-2026-11-01" in line


def test_wrapper_conf_error_exits_2():
    res = run_wrapper("demo", "--dry-run", "--set", "spark.executor.cores=many")
    assert res.returncode == 2
    assert "spark.executor.cores: expected an integer" in res.stderr


def test_wrapper_refuses_old_java(tmp_path):
    fake = tmp_path / "jdk" / "bin"
    fake.mkdir(parents=True)
    (fake / "java").write_text('#!/bin/sh\necho \'java version "1.8.0_392"\' >&2\n')
    (fake / "java").chmod(0o755)
    res = run_wrapper("demo", env={"JAVA_HOME": str(tmp_path / "jdk")})
    assert res.returncode == 2
    assert "Java 1.8.0_392" in res.stderr and "Java 17 or newer" in res.stderr


def test_project_root_found_from_the_shipped_zip(project, tmp_path):
    """Imported from build/lakeloop.zip (as spark-submit's --py-files does), lakeloop still finds jobs/."""
    (project / "conf").mkdir()
    (project / "conf" / "base.yaml").write_text("warehouse: /w\n")
    z = package_library(project)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import lakeloop.paths as p; "
            "print(p.__file__); print(p.project_root())")
    env = {k: v for k, v in os.environ.items() if k not in ("LAKELOOP_HOME", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "-c", code, str(z)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True).stdout.splitlines()
    assert out[0].startswith(str(z))
    assert out[1] == str(project)
