"""The ``features`` job: every declared feature set and training set into ``gold.<name>``.

The sets are conf files (``conf/features/*.yaml``, ``conf/training_sets/*.yaml``), computed by
:mod:`lakeloop.featuresets`; see docs/features.md.  :func:`run` is the job body.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from lakeloop.featuresets import build_all, build_range, load_specs
from lakeloop.job import JobResult, add_range_arguments, run_dates

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["build_gold", "load_specs", "DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "every declared feature set and training set of --date (or each date of --from/--to) into gold.<name>"


def build_gold(spark: SparkSession, conf: Conf, run_date: dt.date, names: list[str] | None = None) -> dict[str, Any]:
    """Replace the ``dt = run_date`` partition of every declared output (``features.sets``: a subset).

    Specs are loaded and validated first (:class:`lakeloop.conf.ConfError`, exit code 2); an output
    with 0 rows from non-empty input raises :class:`lakeloop.errors.DataQualityError` (exit code 3).
    Returns ``{gold table: WriteResult}``.
    """
    return build_all(spark, conf, run_date, load_specs(conf), names)


def add_arguments(parser) -> None:
    """The ``features`` job's own options: ``--from``/``--to``, ``--force``."""
    add_range_arguments(parser, "a range built in one run: inputs read once, each date's features as of it")
    parser.add_argument("--force", action="store_true",
                        help="rebuild dates whose inputs and specs are unchanged since they were built")


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[dict]:
    """The ``features`` job: replace the run date's partition (each date's of a range) of every declared
    output; the specs are loaded and checked once, unchanged dates are skipped before any data is read."""
    dates = run_dates(ctx.run_date, args)
    written = build_range(spark, ctx.conf, dates, load_specs(ctx.conf), force=getattr(args, "force", False))
    for day, results in written.items():
        for table, result in results.items():
            ctx.log.info("%s dt=%s: %s", table, day, result)
    summaries = {d: {"tables": {t: {"rows": r.rows, "version": r.version, **({"skipped": True} if r.skipped else {})}
                                for t, r in w.items()}} for d, w in written.items()}
    if len(dates) == 1:
        (only,) = written.values()
        return JobResult(only, summaries[dates[0].isoformat()])
    return JobResult(written, {"dates": summaries})
