"""SparkSession construction and the run context every job logs with."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lakeloop.conf import Conf, ConfError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["RunContext", "build_session", "jvm_properties", "parse_run_date", "configure_logging"]

_LOG_FORMAT = "%(asctime)s %(levelname)s [%(job)s %(run_id)s] %(name)s: %(message)s"


def parse_run_date(value: str | dt.date | None) -> dt.date:
    """An ISO ``YYYY-MM-DD`` run date; ``None`` means today in UTC."""
    if value is None:
        return dt.datetime.now(dt.UTC).date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"run date {value!r}: expected YYYY-MM-DD") from None


@dataclass
class RunContext:
    """Who is running what: job name, run id, run date and env, plus the merged conf.

    ``ctx.log`` is a logger whose records carry the job name and run id.
    """

    job: str
    conf: Conf
    run_date: dt.date
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def env(self) -> str:
        return self.conf.env

    @property
    def date(self) -> str:
        return self.run_date.isoformat()

    @property
    def log(self) -> logging.LoggerAdapter:
        return logging.LoggerAdapter(logging.getLogger(f"lakeloop.{self.job}"),
                                     {"job": self.job, "run_id": self.run_id})

    @property
    def app_name(self) -> str:
        return f"lakeloop-{self.job}-{self.date}"

    def as_dict(self) -> dict[str, str]:
        return {"job": self.job, "run_id": self.run_id, "run_date": self.date, "env": self.env,
                "started_at": self.started_at.isoformat()}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (notebooks and test runners replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


class _ContextDefaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.setdefault("job", "-")
        record.__dict__.setdefault("run_id", "-")
        return True


def configure_logging(level: str = "WARN") -> None:
    """Driver logging: lakeloop's loggers at INFO unless the conf asks for less, to stderr."""
    root = logging.getLogger("lakeloop")
    if not any(getattr(h, "_lakeloop", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.addFilter(_ContextDefaults())
        handler._lakeloop = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    py_level = {"WARN": logging.INFO, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "ERROR": logging.ERROR}
    root.setLevel(py_level.get(level, logging.INFO))


def build_session(ctx: RunContext) -> SparkSession:
    """Build (or reuse) the SparkSession for ``ctx`` from its conf.

    Every Spark property in conf is applied; under ``spark-submit`` they were already
    passed as ``--conf`` and this is a no-op for them.  The connector jars of ``./setup.sh jvm`` that
    load into this Spark go on ``spark.jars``, with Delta's SQL extension and catalog when delta-spark is
    among them and ``delta.engine`` is not ``bridge`` (:func:`jvm_properties`).  The session time zone is
    always UTC.
    """
    from pyspark.sql import SparkSession

    conf = ctx.conf
    _python_for_workers(conf)
    builder = SparkSession.builder.appName(ctx.app_name)
    for key, value in jvm_properties(conf).items():
        if key == "spark.scheduler.allocation.file":
            value = _resolve_pools_file(conf, value)
        builder = builder.config(key, value)
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(conf["log_level"])
    pool = conf.get("spark.scheduler.pool")
    if pool and conf.get("spark.scheduler.mode") == "FAIR":
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)
    spark.sparkContext.setJobDescription(f"{ctx.job} {ctx.date} run {ctx.run_id}")
    ctx.log.info("spark session %s (master %s, spark %s)", ctx.app_name, spark.sparkContext.master,
                 spark.version)
    return spark


def jvm_properties(conf: Conf, spark_version: str | None = None) -> dict[str, str]:
    """``conf``'s Spark properties plus the connector jars (``spark.jars``) and Delta settings of
    :func:`lakeloop.jvm.spark_settings` for ``delta.engine``; ConfError when delta-spark is required and absent."""
    from lakeloop.jvm import spark_settings

    props = conf.spark_properties()
    try:
        jars, extra = spark_settings(conf["delta.engine"], spark_version, props)
    except ValueError as exc:
        raise ConfError(f"{conf.origin('delta.engine')}: {exc}") from None
    props.update(extra)
    if jars:
        props["spark.jars"] = ",".join([*filter(None, [props.get("spark.jars")]), *(str(j) for j in jars)])
    return props


def _resolve_pools_file(conf: Conf, value: str) -> str:
    if os.path.isabs(value) or os.path.exists(value) or conf.conf_dir is None:
        return value
    candidate = conf.conf_dir / value
    return str(candidate) if candidate.exists() else value


def _python_for_workers(conf: Conf) -> None:
    exe = conf.get("python.executable")
    if exe:
        os.environ.setdefault("PYSPARK_PYTHON", exe)
    elif "PYSPARK_PYTHON" not in os.environ and conf["spark.master"].startswith(("local", "local-cluster")):
        os.environ["PYSPARK_PYTHON"] = sys.executable
