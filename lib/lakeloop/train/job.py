"""The ``train`` job: train, register and gate a model on the gold training set of a run date.

Logs the run to MLflow (conf ``mlflow.*``), registers the model as a new version with the ``@challenger``
alias and promotes it to ``@champion`` only when it passes the evaluation gate; otherwise the job ends with
exit code 4 (:data:`lakeloop.errors.EXIT_GATE_REFUSED`).  See docs/training.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any

from lakeloop.errors import EXIT_GATE_REFUSED, EXIT_OK
from lakeloop.job import JobResult
from lakeloop.train import report, spec
from lakeloop.train.run import TrainOutcome, report_model_name, train_for_date

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["DESCRIPTION", "add_arguments", "input_key", "run"]

DESCRIPTION = "train, register and gate a model on the gold training set of --date"
# what the pipeline's run report and closed-loop table keep of the train report
_SUMMARY = ("model", "model_name", "model_version", "backend", "gate", "status", "job_run_id", "mlflow_run_id")


def add_arguments(parser) -> None:
    """``--model NAME``, ``--backend``, ``--tune N``, ``--shuffle-labels``, ``--force``."""
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="model spec conf/models/NAME.yaml (default: train.model, or the only spec)")
    parser.add_argument("--backend", default=None,
                        help="training backend (default: the model spec's, else conf train.backend)")
    parser.add_argument("--tune", type=int, default=0, metavar="N",
                        help="run N parallel tuning trials first and train the best configuration")
    parser.add_argument("--shuffle-labels", action="store_true",
                        help="permute the training labels (a model the gate must refuse)")
    parser.add_argument("--force", action="store_true",
                        help="train again a date already trained from the same input")


def input_key(conf: Conf, run_date: dt.date, args: Any) -> str:
    """What a train run of ``run_date`` depends on, without reading data: the files of the training set's
    partition (from its log), the model spec's settings, the job's options and the current ``@champion``
    (the gate's reference)."""
    from lakeloop.conf import SPEC
    from lakeloop.lake import Lake
    from lakeloop.train import registry

    _, parts = Lake.from_conf(conf).partition_state(conf["train.table"])
    registry.setup(conf)
    champion = registry.version_for_alias(conf, registry.CHAMPION)
    payload = [run_date.isoformat(), parts.get(run_date.isoformat()),
               {k: conf[k] for k in SPEC if k.startswith(("train.", "mlflow.", "gpu."))},
               [args.backend, args.tune, args.shuffle_labels], champion.version if champion else None]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _done_before(conf: Conf, run_date: dt.date, key: str) -> dict[str, Any] | None:
    """The report of the run that trained and gated this date from the same input, else None."""
    stored = report.reports(conf).read_json(report.report_name(run_date, report_model_name(conf)))
    if isinstance(stored, dict) and stored.get("status") in ("ok", "refused") and stored.get("input_key") == key:
        return stored
    return None


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[TrainOutcome]:
    """Train and gate; a refused gate ends the job with exit code 4 (the champion is unchanged).  A date trained
    from the same input with the same champion is skipped before any data is read (``--force``: train)."""
    conf = spec.model_conf(ctx.conf, args.model)
    force = getattr(args, "force", False)
    done = None if force else _done_before(conf, ctx.run_date, input_key(conf, ctx.run_date, args))
    if done is not None:
        ctx.log.info("model version %s (run %s) was trained from the same input: %s; skipped",
                     done.get("model_version"), done.get("mlflow_run_id"), done["status"])
        summary = {**{k: done[k] for k in _SUMMARY if k in done}, "skipped": True}
        return JobResult(None, summary, exit_code=EXIT_OK if done["status"] == "ok" else EXIT_GATE_REFUSED)
    outcome = train_for_date(spark, ctx.conf, ctx.run_date, backend=args.backend,
                             shuffle_labels=args.shuffle_labels, tune=args.tune,
                             tags={"lakeloop.job_run_id": ctx.run_id}, model=args.model)
    # keyed after the gate: a re-run sees the champion this run left
    outcome.report["input_key"] = input_key(conf, ctx.run_date, args)
    report.write_run_report(conf, ctx.run_date, outcome.report, report_model_name(conf))
    ctx.log.info("model version %s (run %s): %s; report %s", outcome.model_version, outcome.run_id,
                 outcome.decision.reason, outcome.report_path)
    summary = {k: outcome.report[k] for k in _SUMMARY if k in outcome.report}
    if outcome.decision.passed:
        return JobResult(outcome, summary)
    ctx.log.error("train stopped: model version %s refused: %s", outcome.model_version, outcome.decision.reason)
    return JobResult(outcome, summary, exit_code=EXIT_GATE_REFUSED)
