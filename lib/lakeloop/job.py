"""The jobs lakeloop runs, and the one convention every job follows.

A job is a library module with::

    DESCRIPTION = "one line for --help"
    NEEDS_SPARK = True                                   # optional, default True

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(ctx: RunContext, spark: SparkSession | None, args: argparse.Namespace) -> JobResult: ...

:data:`JOBS` names the module of every job.  ``jobs/<name>.py`` (the spark-submit entry file), the
``lakeloop`` console script, the pipeline and the demo all reach a job through :func:`job_module`, never
through a file path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

__all__ = ["JOBS", "JobResult", "job_module", "job_names", "job_parser", "build_parser", "add_range_arguments",
           "date_range", "run_dates", "per_date_summary", "date_summaries"]

T = TypeVar("T")

# job name -> library module holding DESCRIPTION, add_arguments and run
JOBS: dict[str, str] = {
    "datagen": "lakeloop_apps.recommender.datagen.job",
    "ingest": "lakeloop.ingest",
    "curate": "lakeloop.curate",
    "validate": "lakeloop.validate",
    "features": "lakeloop.features",
    "train": "lakeloop.train.job",
    "infer": "lakeloop.infer",
    "materialize": "lakeloop.materialize",
    "stream": "lakeloop.streaming",
    "optimize": "lakeloop.optimize",
    "pipeline": "lakeloop.pipeline",
    "serve": "lakeloop.serve_api",
    "serving": "lakeloop.serving.admin",
    "demo": "lakeloop.demo",
}


@dataclass
class JobResult(Generic[T]):
    """What one run of a job did.

    Attributes
    ----------
    value : object
        The job's own result objects (per-source reports, the trained model's outcome...).
    summary : dict
        JSON-ready figures for the pipeline's run report and step markers.
    exit_code : int
        The process exit code the run ends with (:mod:`lakeloop.errors`); failures that raise are mapped
        by :mod:`lakeloop.cli` instead.
    """

    value: T | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0


def job_names() -> list[str]:
    """Every job, sorted."""
    return sorted(JOBS)


def job_module(name: str) -> ModuleType:
    """The library module of job ``name``; :class:`KeyError` for an unknown job."""
    return importlib.import_module(JOBS[name])


def job_parser(job: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every job takes: --env, --set, --conf-dir, --date."""
    p = argparse.ArgumentParser(prog=job, description=description)
    p.add_argument("--env", default="local", help="conf/<env>.yaml merged over conf/base.yaml (default: local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a conf key, e.g. --set spark.executor.memory=8g (repeatable)")
    p.add_argument("--conf-dir", default=None, help="directory holding base.yaml (default: ./conf)")
    p.add_argument("--date", default=None, help="run date YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--verbose", action="store_true",
                   help="also show Spark's INFO lines and the libraries' own logs (MLflow, xgboost's rounds)")
    return p


def build_parser(job: str) -> argparse.ArgumentParser:
    """The whole parser of ``job``: the common options and the job's own."""
    module = job_module(job)
    parser = job_parser(job, module.DESCRIPTION)
    module.add_arguments(parser)
    return parser


def add_range_arguments(parser: argparse.ArgumentParser, what: str = "a backfill") -> None:
    """``--from``/``--to``: a range of run dates, processed in one run (replaces ``--date``)."""
    parser.add_argument("--from", dest="first", default=None, metavar="YYYY-MM-DD",
                        help=f"first date of {what} (with --to; replaces --date)")
    parser.add_argument("--to", dest="last", default=None, metavar="YYYY-MM-DD", help=f"last date of {what}")


def date_range(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every date from ``first`` to ``last`` inclusive, in order."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def run_dates(run_date: dt.date, args: argparse.Namespace) -> list[dt.date]:
    """The run dates of a job: ``--from``..``--to`` when given (see :func:`add_range_arguments`), else
    ``run_date`` (``--date``, default today).  :class:`~lakeloop.conf.ConfError` (exit code 2) for a half or
    reversed range, or a range given with ``--date``."""
    from lakeloop.conf import ConfError

    first, last = getattr(args, "first", None), getattr(args, "last", None)
    if (first is None) != (last is None):
        raise ConfError("--from and --to go together")
    if first is None:
        return [run_date]
    if getattr(args, "date", None) is not None:
        raise ConfError("give either --date or --from/--to")
    try:
        return date_range(dt.date.fromisoformat(first), dt.date.fromisoformat(last))
    except ValueError as exc:
        raise ConfError(f"run dates: {exc}") from None


def per_date_summary(dates: Sequence[str], results: Sequence[Any],
                     summarize: Callable[[Sequence[Any]], dict[str, Any]]) -> dict[str, Any]:
    """A job's summary over ``dates``: ``summarize(results)`` for one date; for a range
    ``{"dates": {date: summarize(that date's results)}}`` (results carry their date in ``.dt``), so each date of
    a range run is recorded as a run of that date alone would record it (:func:`date_summaries`)."""
    if len(dates) == 1:
        return summarize(results)
    return {"dates": {d: summarize([r for r in results if r.dt == d]) for d in dates}}


def date_summaries(summary: dict[str, Any], dates: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The summary of each date of a run made by :func:`per_date_summary` (a one-date run: the summary)."""
    if len(dates) == 1 and "dates" not in summary:
        return {dates[0]: summary}
    per = summary.get("dates", {})
    return {d: per.get(d, {}) for d in dates}
