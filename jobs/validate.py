"""validate: column statistics of silver partitions and the drift (PSI) gate.

    ./spark-submit.sh validate --date 2026-11-01 [--table silver.events ...]

Profiles the ``dt = --date`` partition of each table (default: conf ``validate.tables``), stores the
statistics in ``<warehouse>/_state/column_stats`` and exits 3 with a readable report when a column's
PSI against the previous run exceeds its threshold.  See docs/features.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli, tables, validate


def _body(ctx, spark, args) -> int:
    tables.configure(ctx.conf)
    if not ctx.conf["validate.enabled"]:
        ctx.log.info("validate.enabled is false: nothing to do")
        return 0
    for result in validate.run_validate(spark, ctx.conf, ctx.run_date, ctx.run_id, args.table):
        ctx.log.info("%s dt=%s: %d columns profiled, baseline dt=%s", result.table, result.dt,
                     len(result.profiles), result.baseline_dt)
    return 0


def main(argv=None) -> int:
    parser = cli.job_parser("validate", "column statistics and drift gate of a run date's partitions")
    parser.add_argument("--table", action="append", default=None, metavar="LAYER.NAME",
                        help="table to validate (repeatable; default: conf validate.tables)")
    return cli.run_job("validate", argv, parser, _body)


if __name__ == "__main__":
    sys.exit(main())
