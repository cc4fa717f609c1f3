"""infer: score the candidates of a run date, write gold.predictions and load the serving store.

    ./spark-submit.sh infer --date 2026-11-01 [--model-version 7]

Uses ``models:/<mlflow.model_name>@champion`` unless ``--model-version`` names a version.  Replaces the
date's partition of ``infer.table`` and switches the serving store to a new version holding each
user's top ``infer.top_n`` items.  See docs/inference.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli, tables
from lakeloop.infer import infer_for_date


def _body(ctx, spark, args) -> int:
    tables.configure(ctx.conf)
    result = infer_for_date(spark, ctx.conf, ctx.run_date, ctx.run_id, model_version=args.model_version)
    ctx.log.info("model %s version %s: %d predictions, %d users, serving version %s, %d model loads",
                 result.model.name, result.model.version, result.rows, result.users, result.serving_version,
                 result.model_loads)
    return 0


def main(argv=None) -> int:
    parser = cli.job_parser("infer", "bulk scoring of --date's candidates -> gold.predictions + serving store")
    parser.add_argument("--model-version", default=None, metavar="N",
                        help="registered model version to use (default: the @champion alias)")
    return cli.run_job("infer", argv, parser, _body)


if __name__ == "__main__":
    sys.exit(main())
