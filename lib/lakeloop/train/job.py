"""The ``train`` job: train, register and gate a model on the gold training set of a run date.

Logs the run to MLflow (conf ``mlflow.*``), registers the model as a new version with the ``@challenger``
alias and promotes it to ``@champion`` only when it passes the evaluation gate; otherwise the job ends with
exit code 4 (:data:`lakeloop.errors.EXIT_GATE_REFUSED`).  See docs/training.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakeloop.errors import EXIT_GATE_REFUSED
from lakeloop.job import JobResult
from lakeloop.train.run import TrainOutcome, train_for_date

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.session import RunContext

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "train, register and gate a model on the gold training set of --date"
# what the pipeline's run report and closed-loop table keep of the train report
_SUMMARY = ("model", "model_name", "model_version", "backend", "gate", "status", "job_run_id", "mlflow_run_id")


def add_arguments(parser) -> None:
    """``--model NAME``, ``--backend``, ``--tune N``, ``--shuffle-labels``."""
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="model spec conf/models/NAME.yaml (default: train.model, or the only spec)")
    parser.add_argument("--backend", default=None,
                        help="training backend (default: the model spec's, else conf train.backend)")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="run N parallel tuning trials first and train the best configuration")
    parser.add_argument("--shuffle-labels", action="store_true",
                        help="permute the training labels (a model the gate must refuse)")


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[TrainOutcome]:
    """Train and gate; a refused gate ends the job with exit code 4 (the champion is unchanged)."""
    outcome = train_for_date(spark, ctx.conf, ctx.run_date, backend=args.backend,
                             shuffle_labels=args.shuffle_labels, tune=args.tune,
                             tags={"lakeloop.job_run_id": ctx.run_id}, model=args.model)
    ctx.log.info("model version %s (run %s): %s; report %s", outcome.model_version, outcome.run_id,
                 outcome.decision.reason, outcome.report_path)
    summary = {k: outcome.report[k] for k in _SUMMARY if k in outcome.report}
    if outcome.decision.passed:
        return JobResult(outcome, summary)
    ctx.log.error("train stopped: model version %s refused: %s", outcome.model_version, outcome.decision.reason)
    return JobResult(outcome, summary, exit_code=EXIT_GATE_REFUSED)
