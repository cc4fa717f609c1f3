"""SparkSession construction and the run context every job logs with."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lakeloop.conf import Conf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["RunContext", "build_session", "parse_run_date", "configure_logging", "forward_env", "forwarded_names"]

# Spark's default spark.redaction.regex; the names lakeloop forwards are added to it
_REDACTION_DEFAULT = r"(?i)secret|password|token|access[.]?key"

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
    passed as ``--conf`` and this is a no-op for them.  The session time zone is always UTC.
    """
    from pyspark.sql import SparkSession

    conf = ctx.conf
    _python_for_workers(conf)
    builder = SparkSession.builder.appName(ctx.app_name)
    for key, value in conf.spark_properties().items():
        if key == "spark.scheduler.allocation.file":
            value = _resolve_pools_file(conf, value)
        builder = builder.config(key, value)
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    builder = forward_env(conf, builder, ctx.log)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(conf.get("log_level", "WARN"))
    pool = conf.get("spark.scheduler.pool")
    if pool and conf.get("spark.scheduler.mode") == "FAIR":
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)
    spark.sparkContext.setJobDescription(f"{ctx.job} {ctx.date} run {ctx.run_id}")
    ctx.log.info("spark session %s (master %s, spark %s)", ctx.app_name, spark.sparkContext.master,
                 spark.version)
    return spark


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


def forwarded_names(conf: Conf) -> list[str]:
    """``deploy.forward_env`` plus ``serving.redis.password_env``: the variables executors need from the driver."""
    names = list(conf.get("deploy.forward_env") or [])
    password = conf.get("serving.redis.password_env")
    if password and password not in names:
        names.append(password)
    return names


def forward_env(conf: Conf, builder, log: logging.LoggerAdapter | logging.Logger):  # noqa: ANN001, ANN201
    """Set ``spark.executorEnv.<NAME>`` on ``builder`` from this process's environment.

    The values go from the driver to the executors inside Spark (standalone: the worker's launch
    environment, YARN: the container's), never through a command line; ``spark.redaction.regex``
    is extended with the names so the UI and event logs show them redacted.  A listed variable that
    is not set is skipped with a warning (the job that needs it fails with its own message).
    """
    names = forwarded_names(conf)
    set_names = [n for n in names if n in os.environ]
    for name in names:
        if name not in os.environ:
            log.warning("deploy.forward_env: %s is not set in the driver's environment; executors will not have it",
                        name)
    for name in set_names:
        builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    if set_names:
        base = conf.get("spark.extra", {}).get("spark.redaction.regex") or _REDACTION_DEFAULT
        builder = builder.config("spark.redaction.regex",
                                 f"{base}|" + "|".join(f"executorEnv\\.{re.escape(n)}" for n in set_names))
    return builder
