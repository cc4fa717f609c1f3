"""train: train, register and gate a model on the gold training set of a run date.

    ./spark-submit.sh train --date 2026-11-01 [--backend xgboost] [--tune 8] [--shuffle-labels]

Logs the run to MLflow (conf ``mlflow.*``), registers the model as a new version with the
``@challenger`` alias and promotes it to ``@champion`` only when it passes the evaluation gate;
otherwise exits with code 4.  See docs/training.md.
"""

from __future__ import annotations

import sys

from lakeloop import cli, tables
from lakeloop.errors import GateRefused
from lakeloop.train.run import train_for_date


def _body(ctx, spark, args) -> int:
    tables.configure(ctx.conf)
    outcome = train_for_date(spark, ctx.conf, ctx.run_date, backend=args.backend,
                             shuffle_labels=args.shuffle_labels, tune=args.tune,
                             tags={"lakeloop.job_run_id": ctx.run_id})
    ctx.log.info("model version %s (run %s): %s; report %s", outcome.model_version, outcome.run_id,
                 outcome.decision.reason, outcome.report_path)
    if not outcome.decision.passed:
        raise GateRefused(f"model version {outcome.model_version} refused: {outcome.decision.reason}")
    return 0


def main(argv=None) -> int:
    parser = cli.job_parser("train", "train, register and gate a model on the gold training set of --date")
    parser.add_argument("--backend", default=None, help="training backend (default: conf train.backend)")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="run N parallel tuning trials first and train the best configuration")
    parser.add_argument("--shuffle-labels", action="store_true",
                        help="permute the training labels (a model the gate must refuse)")
    return cli.run_job("train", argv, parser, _body)


if __name__ == "__main__":
    sys.exit(main())
