"""features: gold feature tables for a run date.

    ./spark-submit.sh features --date 2026-11-01

Replaces the ``dt = --date`` partition of ``gold.user_favours``, ``gold.item_stats`` and
``gold.training_set`` from ``silver.events`` and ``silver.items``.  See docs/features.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli, features, tables


def _body(ctx, spark, args) -> int:
    tables.configure(ctx.conf)
    for table, result in features.build_gold(spark, ctx.conf, ctx.run_date).items():
        ctx.log.info("%s dt=%s: %s", table, ctx.date, result)
    return 0


def main(argv=None) -> int:
    parser = cli.job_parser("features", "gold feature tables and the point-in-time training set of --date")
    return cli.run_job("features", argv, parser, _body)


if __name__ == "__main__":
    sys.exit(main())
