"""Routing to the Spark 3.5 side runtime: which jobs go there and the spark-submit command they get.

The runtime here is a folder laid out like ``.venv-spark35`` (interpreter, pip-installed pyspark's
spark-submit, BigDL's two jars); the real runtime is exercised by the ``bigdl`` tests run in it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lakeloop.conf import ConfError, load_conf
from lakeloop.runtime import LOG4J_CONF, needs_spark35
from lakeloop.submit import build_command

from tests.test_submit import CONF, conf_args, flag, project  # noqa: F401  (project is a fixture)

JARS = ("dllib/lib/bigdl-dllib-spark_3.1.3-2.4.0-jar-with-dependencies.jar", "core/lib/all-2.4.0.jar")


@pytest.fixture
def jobs_project(project: Path) -> Path:  # noqa: F811
    """The copied project with train and infer jobs as well."""
    for job in ("train", "infer"):
        (project / "jobs" / f"{job}.py").write_text("import sys\n")
    return project


@pytest.fixture
def runtime(tmp_path) -> Path:
    """A virtualenv layout with what build_command looks for; returns its interpreter path."""
    venv = tmp_path / "venv35"
    site = venv / "lib" / "python3.11" / "site-packages"
    for rel in ("bin/python", "lib/python3.11/site-packages/pyspark/bin/spark-submit",
                *(f"lib/python3.11/site-packages/bigdl/share/{j}" for j in JARS)):
        (venv / rel).parent.mkdir(parents=True, exist_ok=True)
        (venv / rel).write_text("")
    assert (site / "pyspark").is_dir()
    return venv / "bin" / "python"


def jar_paths(python: Path) -> list[str]:
    share = python.parent.parent / "lib" / "python3.11" / "site-packages" / "bigdl" / "share"
    return sorted(str(share / j) for j in JARS)


def test_train_with_bigdl_runs_in_the_spark35_runtime(jobs_project, runtime):
    cmd = build_command("train", "local", [f"runtime.spark35.python={runtime}"],
                        ["--date", "2026-11-01", "--backend", "bigdl"], conf_dir=CONF, root=jobs_project)
    pyspark_home = runtime.parent.parent / "lib" / "python3.11" / "site-packages" / "pyspark"
    assert cmd.argv[0] == str(pyspark_home / "bin" / "spark-submit")
    assert cmd.env == {"PYSPARK_PYTHON": str(runtime), "PYSPARK_DRIVER_PYTHON": str(runtime),
                       "SPARK_HOME": str(pyspark_home), "KMP_SETTINGS": "0"}
    assert sorted(flag(cmd, "--jars").split(",")) == jar_paths(runtime)
    props = conf_args(cmd)
    assert sorted(props["spark.driver.extraClassPath"].split(":")) == jar_paths(runtime)
    java = props["spark.driver.extraJavaOptions"]
    assert java.startswith("-XX:+UseSerialGC")  # the conf's options are kept
    assert f"-Dlog4j2.configurationFile={LOG4J_CONF}" in java and "-DlogFilename=" in java
    assert props["spark.executorEnv.KMP_SETTINGS"] == "0"
    assert str(LOG4J_CONF) in flag(cmd, "--files").split(",")
    assert cmd.argv[-4:] == ["--date", "2026-11-01", "--backend", "bigdl"]


def test_conf_backend_routes_too_and_other_jobs_stay_on_spark4(jobs_project, runtime):
    sets = [f"runtime.spark35.python={runtime}", "train.backend=bigdl"]
    routed = build_command("train", "local", sets, [], conf_dir=CONF, root=jobs_project)
    assert routed.env["PYSPARK_PYTHON"] == str(runtime)
    other = build_command("train", "local", sets, ["--backend", "xgboost"], conf_dir=CONF, root=jobs_project,
                          python="/py/bin/python")
    assert other.env == {"PYSPARK_PYTHON": "/py/bin/python", "PYSPARK_DRIVER_PYTHON": "/py/bin/python"}
    # Spark 4 jobs may ship the connector jars of ./setup.sh jvm, never BigDL's
    shipped = other.argv[other.argv.index("--jars") + 1] if "--jars" in other.argv else ""
    assert "bigdl" not in shipped.lower()
    ingest = build_command("ingest", "local", sets, [], conf_dir=CONF, root=jobs_project, python="/py/bin/python")
    assert ingest.env["PYSPARK_PYTHON"] == "/py/bin/python"


def test_missing_runtime_says_how_to_build_it(jobs_project, tmp_path):
    missing = tmp_path / "nowhere" / "bin" / "python"
    with pytest.raises(ConfError, match=r"runtime.spark35.python: no Spark 3.5 runtime .*\./setup.sh spark35"):
        build_command("train", "local", [f"runtime.spark35.python={missing}"], ["--backend", "bigdl"],
                      conf_dir=CONF, root=jobs_project)


def test_yarn_ships_the_spark35_archive_and_jars(jobs_project, runtime, tmp_path):
    archive = tmp_path / "env35.tar.gz"
    archive.write_bytes(b"")
    cmd = build_command("train", "yarn", [f"runtime.spark35.python={runtime}", f"runtime.spark35.archive={archive}",
                                          "runtime.spark35.spark_home=/opt/spark-3.5"],
                        ["--backend", "bigdl"], conf_dir=CONF, root=jobs_project)
    assert cmd.argv[0] == "/opt/spark-3.5/bin/spark-submit"
    assert cmd.env["SPARK_HOME"] == "/opt/spark-3.5"
    assert flag(cmd, "--archives").split(",")[0] == f"{archive}#environment"  # then the conf folders
    props = conf_args(cmd)
    names = sorted(Path(j).name for j in jar_paths(runtime))
    # cluster deploy mode: the jars and the log4j file are in the containers' working directories
    assert sorted(props["spark.driver.extraClassPath"].split(":")) == names
    assert sorted(props["spark.executor.extraClassPath"].split(":")) == names
    assert f"-Dlog4j2.configurationFile={LOG4J_CONF.name}" in props["spark.executor.extraJavaOptions"]
    assert props["spark.executorEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
    with pytest.raises(ConfError, match=r"runtime.spark35.archive: .* not found; build it with "
                                        r"EXTRAS=spark35 scripts/pack-env.sh"):
        build_command("train", "yarn", [f"runtime.spark35.python={runtime}"], ["--backend", "bigdl"],
                      conf_dir=CONF, root=jobs_project)


def test_infer_without_a_registry_stays_on_spark4_and_creates_nothing(tmp_path):
    conf = load_conf("local", [f"warehouse={tmp_path / 'wh'}"], conf_dir=CONF)
    assert not needs_spark35(conf, "infer", ["--date", "2026-11-01"])
    assert not (tmp_path / "wh").exists()
