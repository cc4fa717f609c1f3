"""Shared fixtures: one SparkSession for the whole test run, and a conf rooted in tmp_path."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# fixtures: redis_server (a real redis-server on loopback), make_store (a serving store per test)
pytest_plugins = ["tests.redis_server"]
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


JAVA_OPTIONS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
# the Spark 3.5 runtime (.venv-spark35) lacks Spark 4, torch, TensorFlow and the dev tools most test modules
# import: there only the modules written for it are collected
SPARK35 = version("pyspark").startswith("3.5.")
SPARK35_MODULES = {"test_spark35_runtime.py", "test_bigdl.py"}


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """In the Spark 3.5 runtime, skip collecting every test module but :data:`SPARK35_MODULES`."""
    if SPARK35 and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in SPARK35_MODULES
    return None


def runtime_properties() -> dict[str, str]:
    """In the Spark 3.5 runtime: BigDL's jars and logging, as spark-submit.sh adds them; else just the JVM options."""
    from lakeloop.runtime import bigdl_jars, bigdl_properties

    base = {"spark.driver.extraJavaOptions": JAVA_OPTIONS}
    jars = bigdl_jars(Path(sys.executable))
    if not jars:
        return base
    os.environ.setdefault("KMP_SETTINGS", "0")
    return {"spark.jars": ",".join(str(j) for j in jars),
            **bigdl_properties(jars, base, on_cluster=False, remote_driver=False)}


@pytest.fixture(scope="session")
def spark():
    """A local[2] session shared by all tests: UI off, 4 shuffle partitions, UTC."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in runtime_properties().items():
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
        .appName("lakeloop-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "3g")
        .config("spark.sql.warehouse.dir", str(ROOT / "build" / "spark-warehouse"))
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def conf(tmp_path):
    """The local conf with warehouse and landing under tmp_path."""
    from lakeloop.conf import load_conf

    return load_conf("local", [f"warehouse={tmp_path / 'warehouse'}", f"landing={tmp_path / 'landing'}"],
                     conf_dir=ROOT / "conf")
