"""The JVM connectors lakeloop loads into Spark when they are present: delta-spark and Spark's Kafka connector.

``./setup.sh jvm`` resolves them with Apache Maven (``scripts/jvm/``) into ``jars/delta`` and ``jars/kafka``,
a Kafka broker for the tests into ``jars/kafka-broker``, and builds ``.venv-delta``, the delta-spark runtime
(the pyspark the Delta jars are built for); ``$LAKELOOP_JARS`` names another folder with the same layout
(jars provided by hand).  Each folder's ``versions.properties`` records the pinned versions and the Spark
lines its jars are loaded into: Delta's JVM code calls Spark internals that change between Spark minor
versions (delta-spark 4.4.0, built on Spark 4.2, fails on Spark 4.3), so a connector is only put on the
classpath of a Spark of one of its lines (:func:`connector`).  Without the jars nothing changes: tables go
through the delta-rs bridge and ``stream.source: kafka`` says which connector is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakeloop.paths import project_root

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["JARS_ENV", "SETUP_HINT", "DELTA_EXTENSION", "DELTA_CATALOG", "CONNECTORS", "Connector", "jars_dir",
           "connector", "session_jars", "spark_settings", "kafka_broker_jars", "delta_runtime_python",
           "delta_properties", "delta_loaded", "kafka_loaded"]

JARS_ENV = "LAKELOOP_JARS"
SETUP_HINT = "./setup.sh jvm"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
_VERSIONS = "versions.properties"


def jars_dir() -> Path:
    """``$LAKELOOP_JARS`` or ``<project>/jars``."""
    return Path(os.environ.get(JARS_ENV) or project_root() / "jars")


def _jars(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jar")) if folder.is_dir() else []


CONNECTORS = ("delta", "kafka")


@dataclass(frozen=True)
class Connector:
    """One connector's jars (``jars/<name>``), their pinned versions and whether they load into ``spark_version``.

    ``usable`` is False, and ``reason`` says why, when the jars are missing or built for other Spark lines.
    """

    name: str
    jars: tuple[Path, ...]
    versions: dict[str, str]
    spark_version: str

    @property
    def spark_lines(self) -> tuple[str, ...]:
        return tuple(self.versions.get("spark.lines", "").split())

    @property
    def usable(self) -> bool:
        return bool(self.jars) and _line(self.spark_version) in self.spark_lines

    @property
    def reason(self) -> str:
        folder = jars_dir() / self.name
        if not self.jars:
            return f"no {self.name} connector jars in {folder} (fetch them with {SETUP_HINT})"
        if not self.usable:
            return (f"the {self.name} connector jars in {folder} load into Spark {' / '.join(self.spark_lines) or '?'}"
                    f", this is Spark {self.spark_version}" + (" (use the delta-spark runtime .venv-delta)"
                                                               if self.name == "delta" else ""))
        return ""


def _line(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _read_versions(folder: Path) -> dict[str, str]:
    path = folder / _VERSIONS
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _installed_spark() -> str:
    # the imported pyspark's own version, not the distribution's metadata: on a cluster the pyspark.zip that
    # Spark puts first on the path is the one that runs, with no metadata of its own
    from pyspark.version import __version__

    return __version__


def connector(name: str, spark_version: str | None = None) -> Connector:
    """The ``jars/<name>`` connector (``delta`` or ``kafka``) for a Spark of ``spark_version`` (default: pyspark's)."""
    if name not in CONNECTORS:
        raise ValueError(f"connector {name!r}: expected one of {', '.join(CONNECTORS)}")
    folder = jars_dir() / name
    return Connector(name, tuple(_jars(folder)), _read_versions(folder), spark_version or _installed_spark())


def session_jars(spark_version: str | None = None, *, delta: bool = True) -> list[Path]:
    """Every usable connector's jars for a Spark of ``spark_version``; ``delta=False`` leaves delta-spark out."""
    names = [n for n in CONNECTORS if delta or n != "delta"]
    return [j for n in names for j in connector(n, spark_version).jars if connector(n, spark_version).usable]


def spark_settings(engine: str = "auto", spark_version: str | None = None,
                   properties: dict[str, str] | None = None) -> tuple[list[Path], dict[str, str]]:
    """The connector jars to ship and the Spark properties to add for ``delta.engine`` = ``engine``.

    ``properties`` are the session's others: a ``spark.sql.extensions`` there is kept beside Delta's.  With
    ``engine`` ``bridge`` delta-spark is left out; ``delta-spark`` without usable Delta jars raises ValueError
    naming the reason; ``auto`` takes what is usable.  The chosen engine is recorded as
    ``spark.lakeloop.delta.engine`` for :func:`lakeloop.delta.engine.engine_of`.
    """
    delta = connector("delta", spark_version)
    if engine == "delta-spark" and not delta.usable:
        raise ValueError(f"delta.engine: delta-spark, but {delta.reason}")
    jars = session_jars(spark_version, delta=engine != "bridge")
    props = {"spark.lakeloop.delta.engine": engine}
    if engine != "bridge" and delta.usable:
        props.update(delta_properties())
        existing = (properties or {}).get("spark.sql.extensions")
        if existing and DELTA_EXTENSION not in existing:
            props["spark.sql.extensions"] = f"{existing},{DELTA_EXTENSION}"
    return jars, props


def kafka_broker_jars() -> list[Path]:
    """The classpath of the test Kafka broker (``jars/kafka-broker``); empty when not fetched."""
    return _jars(jars_dir() / "kafka-broker")


def delta_runtime_python(root: Path | None = None) -> Path | None:
    """The delta-spark runtime's interpreter (``.venv-delta``, built by ``./setup.sh jvm``); None when absent."""
    python = (root or project_root()) / ".venv-delta" / "bin" / "python"

    return python if python.exists() else None


def delta_properties() -> dict[str, str]:
    """The Spark properties that turn delta-spark on in a session whose classpath holds its jars."""
    return {"spark.sql.extensions": DELTA_EXTENSION, "spark.sql.catalog.spark_catalog": DELTA_CATALOG}


def _class_loadable(spark: SparkSession, name: str) -> bool:
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        loader = jvm.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(name, False, loader)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not loadable
        return False


def delta_loaded(spark: SparkSession) -> bool:
    """Whether ``spark`` runs with delta-spark: its SQL extension configured and its classes on the classpath."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    return DELTA_EXTENSION in extensions and _class_loadable(spark, DELTA_EXTENSION)


def kafka_loaded(spark: SparkSession) -> bool:
    """Whether Spark's Kafka connector is on ``spark``'s classpath."""
    return _class_loadable(spark, "org.apache.spark.sql.kafka010.KafkaSourceProvider")
