"""SparkSession construction and the run context every job logs with."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lakeloop.conf import Conf, ConfError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["RunContext", "build_session", "jvm_properties", "parse_run_date", "configure_logging", "is_verbose",
           "quiet_console", "log_to_file", "log_dir", "spark_log_options", "LOG4J2_CONF", "forward_env",
           "forwarded_names"]

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

    def announce(self, msg: str, *args: object) -> None:
        """Log ``msg`` at INFO on the console even while :func:`quiet_console` holds job lines back."""
        logging.getLogger(f"lakeloop.{self.job}").info(msg, *args, extra={"job": self.job, "run_id": self.run_id,
                                                                          "console": True})

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


class _QuietFilter(logging.Filter):
    """Holds lakeloop's INFO lines back from the console while :func:`quiet_console` is on (records logged
    with ``extra={"console": True}`` always pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _CONSOLE.quiet or _CONSOLE.verbose or record.levelno >= logging.WARNING:
            return True
        return bool(getattr(record, "console", False))


# the Spark driver's log4j2 configuration (console: warnings; <log dir>/spark-driver.log: everything)
LOG4J2_CONF = Path(__file__).resolve().parent / "resources" / "log4j2.properties"
# libraries whose own INFO lines go to the log file only, unless --verbose
LIBRARY_LOGGERS = ("mlflow", "XGBoost-PySpark", "py4j", "urllib3", "alembic", "py.warnings")


@dataclass
class _Console:
    """Process-wide console settings: --verbose, and whether job lines are held back (pipeline/demo steps)."""

    verbose: bool = False
    quiet: bool = False
    handler: logging.Handler | None = None
    root_handler: logging.Handler | None = None


_CONSOLE = _Console()


def _console_handler(level: int = logging.NOTSET) -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.addFilter(_ContextDefaults())
    handler.setLevel(level)
    return handler


def configure_logging(level: str = "WARN", *, verbose: bool | None = None) -> None:
    """Driver logging: lakeloop's loggers at INFO unless the conf asks for less, to stderr.

    ``verbose`` (the jobs' ``--verbose``; None keeps the last setting) also shows the libraries' own log
    lines (MLflow, xgboost, py4j, Python warnings) on stderr; without it they go to the log files of
    :func:`log_to_file` only.
    """
    root = logging.getLogger("lakeloop")
    if _CONSOLE.handler is None:
        _CONSOLE.handler = _console_handler()
        _CONSOLE.handler.addFilter(_QuietFilter())
        root.addHandler(_CONSOLE.handler)
        root.propagate = False
    if verbose is not None:
        _CONSOLE.verbose = verbose
    py_level = {"WARN": logging.INFO, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "ERROR": logging.ERROR}
    root.setLevel(py_level.get(level, logging.INFO))
    _apply_console()


def _apply_console() -> None:
    verbose = _CONSOLE.verbose
    top = logging.getLogger()
    if verbose and _CONSOLE.root_handler is None:
        _CONSOLE.root_handler = _console_handler(logging.INFO)
        top.addHandler(_CONSOLE.root_handler)
        top.setLevel(min(top.level or logging.WARNING, logging.INFO))
    elif not verbose and _CONSOLE.root_handler is not None:
        top.removeHandler(_CONSOLE.root_handler)
        _CONSOLE.root_handler = None
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        for h in lib.handlers:  # a library's own stderr handler (MLflow has one)
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(logging.NOTSET if verbose else logging.WARNING)
        if name in ("py4j", "XGBoost-PySpark"):  # xgboost's workers log at its driver logger's level
            lib.setLevel(logging.INFO if verbose else logging.WARNING)


def is_verbose() -> bool:
    """Whether ``--verbose`` was given: libraries' own progress output (xgboost's rounds) is shown."""
    return _CONSOLE.verbose


@contextmanager
def quiet_console() -> Iterator[None]:
    """While in it, lakeloop's INFO lines go to the log files only (the pipeline and the demo print one line
    per step instead); warnings and errors still reach the console; ``--verbose`` shows everything."""
    previous, _CONSOLE.quiet = _CONSOLE.quiet, True
    try:
        yield
    finally:
        _CONSOLE.quiet = previous


@contextmanager
def log_to_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """While in it, every log record (lakeloop's and the libraries', INFO and up) goes to ``path`` too."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(target, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    handler.addFilter(_ContextDefaults())
    handler.setLevel(logging.INFO)
    top = logging.getLogger()
    level = top.level
    top.setLevel(min(level or logging.WARNING, logging.INFO))
    own = (logging.getLogger(n) for n in ("lakeloop", *LIBRARY_LOGGERS))
    loggers = [top, *(logger for logger in own if not logger.propagate)]
    for logger in loggers:
        logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield target
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        top.setLevel(level)
        handler.close()


def log_dir(conf: Conf) -> Path:
    """Where log files go: ``<warehouse>/_logs`` on a local warehouse, else ``<tmp>/lakeloop-logs``."""
    warehouse = str(conf["warehouse"])
    if "://" in warehouse and not warehouse.startswith("file://"):
        return Path(tempfile.gettempdir()) / "lakeloop-logs"
    return Path(warehouse.removeprefix("file://")).expanduser().resolve() / "_logs"


def spark_log_options(props: dict[str, str], *, log_directory: str | os.PathLike[str], verbose: bool = False,
                      remote_driver: bool = False) -> dict[str, str]:
    """``props`` with the driver's Java options led by lakeloop's log4j2 configuration (:data:`LOG4J2_CONF`):
    Spark's warnings on the console, everything in ``<log_directory>/spark-driver.log``.  A remote driver
    (cluster deploy mode) finds the file, shipped with ``--files``, in its working directory and logs there."""
    conf_file = LOG4J2_CONF.name if remote_driver else str(LOG4J2_CONF)
    options = [f"-Dlog4j2.configurationFile={conf_file}"]
    if not remote_driver:
        options.append(f"-Dlakeloop.log.dir={log_directory}")
    if verbose:
        options.append("-Dlakeloop.console.level=INFO")
    out = dict(props)
    key = "spark.driver.extraJavaOptions"
    out[key] = " ".join([*options, out.get(key) or ""]).strip()
    return out


def build_session(ctx: RunContext) -> SparkSession:
    """Build (or reuse) the SparkSession for ``ctx`` from its conf.

    Every Spark property in conf is applied; under ``spark-submit`` they were already
    passed as ``--conf`` and this is a no-op for them.  The connector jars of ``./setup.sh jvm`` that
    load into this Spark go on ``spark.jars``, with Delta's SQL extension and catalog when delta-spark is
    among them and ``delta.engine`` is not ``bridge`` (:func:`jvm_properties`).  The session time zone is
    always UTC.  Spark's console progress bar is on only when stderr is a terminal (and
    ``spark.ui.showConsoleProgress``); a driver JVM started here logs through :data:`LOG4J2_CONF`.  A new
    session logs its Spark UI address.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    conf = ctx.conf
    _python_for_workers(conf)
    fresh = SparkContext._active_spark_context is None
    props = jvm_properties(conf)
    if fresh and "PYSPARK_GATEWAY_PORT" not in os.environ and "log4j2" not in (
            props.get("spark.driver.extraJavaOptions") or ""):
        props = spark_log_options(props, log_directory=log_dir(conf), verbose=_CONSOLE.verbose)
    props["spark.ui.showConsoleProgress"] = str(bool(conf["spark.ui.showConsoleProgress"])
                                                and _stderr_is_terminal()).lower()
    builder = SparkSession.builder.appName(ctx.app_name)
    for key, value in props.items():
        if key == "spark.scheduler.allocation.file":
            value = _resolve_pools_file(conf, value)
        builder = builder.config(key, value)
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    builder = forward_env(conf, builder, ctx.log)
    spark = builder.getOrCreate()
    _spark_log_level(spark, conf["log_level"])
    pool = conf.get("spark.scheduler.pool")
    if pool and conf.get("spark.scheduler.mode") == "FAIR":
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)
    spark.sparkContext.setJobDescription(f"{ctx.job} {ctx.date} run {ctx.run_id}")
    if fresh:
        sc = spark.sparkContext
        ctx.announce("spark session %s: UI %s (master %s, spark %s)", ctx.app_name,
                     sc.uiWebUrl or "off (spark.ui.enabled false)", sc.master, spark.version)
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


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _spark_log_level(spark: SparkSession, level: str) -> None:
    """``log_level`` for Spark's loggers; under lakeloop's log4j2 configuration the console already shows
    warnings only and the log file keeps INFO, so only --verbose (INFO) or a quieter level is set."""
    java_options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions", "") or ""
    if _CONSOLE.verbose:
        spark.sparkContext.setLogLevel("INFO")
    elif LOG4J2_CONF.name not in java_options or level in ("ERROR", "FATAL", "OFF"):
        spark.sparkContext.setLogLevel(level)


def _resolve_pools_file(conf: Conf, value: str) -> str:
    """The FAIR pools file found here (as given, or in the conf directory) as a ``file://`` URI: Spark opens it with
    Hadoop's FileSystem, which would look for a bare path on the default file system (HDFS on YARN)."""
    if "://" in value:
        return value
    for candidate in [Path(value), *([conf.conf_dir / value] if conf.conf_dir is not None else [])]:
        if candidate.is_file():
            return candidate.resolve().as_uri()
    return value


def _python_for_workers(conf: Conf) -> None:
    exe = conf.get("python.executable")
    if exe:
        os.environ.setdefault("PYSPARK_PYTHON", exe)
    elif "PYSPARK_PYTHON" not in os.environ and conf["spark.master"].startswith(("local", "local-cluster")):
        os.environ["PYSPARK_PYTHON"] = sys.executable


def forwarded_names(conf: Conf) -> list[str]:
    """``deploy.forward_env`` plus ``serving.redis.password_env``: the variables executors need from the driver."""
    names = list(conf["deploy.forward_env"])
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
