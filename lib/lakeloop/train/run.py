"""One training run for a date: data -> (tuning) -> in-cluster fit -> MLflow -> registry -> gate.

:func:`train_for_date` is the body of ``jobs/train.py``.  Everything needed to reproduce the run is
logged on the MLflow run: effective hyper-parameters, the feature list (param and ``features.json``),
the Delta version of every input table (params ``input.<table>.version`` and tags), the seed and
holdout fraction, per-round/epoch metrics, and the model with its signature and input example.
The model is registered as a new version with the ``@challenger`` alias and gated
(:mod:`lakeloop.train.gate`); the gate's decision is tagged on the run and on the model version and
written to the run report JSON (:func:`lakeloop.train.report.write_run_report`).

A re-run of a date trains and registers a new version (registry versions are append-only), gates it
against the champion of that moment and replaces the date's report; ``@champion`` only ever moves
to a version that passed the gate.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakeloop.conf import ConfError
from lakeloop.train import baselines, gate, registry, report, spec, tasks, tuning
from lakeloop.train.base import Backend, FitResult, TrainingData, check_backend
from lakeloop.train.dataset import load_model_data

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf

__all__ = ["TrainOutcome", "train_for_date", "model_signature", "holdout_frame"]

MODEL_ARTIFACT = "model"


@dataclass
class TrainOutcome:
    """What a training run produced: MLflow run, model version, gate decision, report file."""

    run_id: str
    model_version: str
    decision: gate.GateDecision
    report_path: Path | str
    trial_run_ids: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def model_signature(features: list[str], task: str = "binary", classes: int = 0) -> ModelSignature:
    """Inputs: the feature columns as doubles (NaN = missing); output: the task's prediction."""
    return tasks.signature(task, features, classes)


def holdout_frame(data: TrainingData, max_rows: int, seed: int) -> pd.DataFrame:
    """The holdout as pandas (features, label and the hash split's column), a seeded sample above ``max_rows``."""
    group = data.split.get("column") if data.split.get("kind") == "hash" else None
    extra = [group] if group and group not in data.features and group in data.valid.columns else []
    frame = data.valid.select(*data.features, data.label, *extra)
    total = frame.count()
    if total > max_rows:
        frame = frame.sample(fraction=min(1.0, 1.1 * max_rows / total), seed=seed).limit(max_rows)
    return frame.toPandas()


def _tune(spark: SparkSession, conf: Conf, backend: Backend, data: TrainingData, params: dict[str, Any],
          trials: int) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    import mlflow

    metric, seed = conf["train.gate_metric"], conf["train.seed"]
    configs = tuning.sample_space(conf["train.tune_space"], trials, seed)
    done = tuning.run_trials(spark, backend, data, params, configs, metric=metric,
                             sample_rows=conf["train.tune_sample_rows"], seed=seed)
    ids = tuning.log_trials(done, metric)
    best = tuning.best_trial(done, metric, data.task)
    mlflow.set_tags({"tune.trials": str(len(done)), "tune.best_trial": str(best.index)})
    mlflow.log_metric(f"tune.best_holdout_{metric}", best.value)
    summary = {"trials": [{"index": t.index, "params": t.params, metric: t.value, "device": t.device}
                          for t in sorted(done, key=lambda t: t.index)],
               "best": best.index}
    return {**params, **best.params}, ids, summary


def _log_inputs(conf: Conf, data: TrainingData, backend: Backend, run_date: dt.date, shuffle: bool,
                tags: dict[str, str]) -> None:
    import mlflow

    versions = {f"input.{table}.version": str(v) for table, v in data.input_versions.items()}
    mlflow.set_tags({**tags, **versions, "lakeloop.run_date": run_date.isoformat(),
                     "lakeloop.backend": backend.name, "lakeloop.shuffle_labels": str(shuffle).lower(),
                     "lakeloop.model": str(getattr(conf, "model_name", None) or ""), "lakeloop.task": data.task})
    mlflow.log_params({**versions, "features": ",".join(data.features), "n_features": len(data.features),
                       "label": data.label, "train.seed": conf["train.seed"], "train.days": conf["train.days"],
                       "train.holdout_fraction": conf["train.holdout_fraction"], "train.task": data.task,
                       "train.split": conf["train.split"], "train.classes": data.classes})
    mlflow.log_metrics({"split.holdout_fraction": data.split.get("realised", float("nan")),
                        "split.train_rows": data.split.get("train_rows", 0),
                        "split.holdout_rows": data.split.get("holdout_rows", 0)})
    mlflow.log_dict({"features": data.features, "label": data.label}, "features.json")


def _log_fit(fit: FitResult) -> None:
    import mlflow

    mlflow.log_params({f"param.{k}": v for k, v in fit.params.items()})
    registry.log_history(fit.history)
    if fit.feature_importance:
        mlflow.log_dict(fit.feature_importance, "feature_importance.json")


def _log_evaluation(holdout: pd.DataFrame, label: str, scores: Any, fit: FitResult, task: str) -> list[str]:
    import mlflow

    if task != "binary":  # ROC, PR and calibration plots are binary-classifier plots
        return []
    with tempfile.TemporaryDirectory() as tmp:
        paths = report.evaluation_plots(holdout[label].to_numpy(), scores, fit.feature_importance, tmp)
        mlflow.log_artifacts(tmp, "evaluation")
    return [f"evaluation/{p.name}" for p in paths]


def _log_decision(decision: gate.GateDecision) -> None:
    import mlflow

    mlflow.set_tags(gate.decision_tags(decision))
    values = {"gate.challenger_value": decision.challenger_value, "gate.reference_value": decision.reference_value}
    values.update({f"gate.baseline.{k}": v for k, v in decision.baselines.items()})
    mlflow.log_metrics({k: v for k, v in values.items() if v is not None})


def _register_and_gate(conf: Conf, impl: Backend, fit: FitResult, data: TrainingData, holdout: pd.DataFrame,
                       stats: baselines.TrainingStats, run_id: str,
                       run_date: dt.date) -> tuple[Any, str, gate.GateDecision, list[str]]:
    """Log the model, register it as ``@challenger``, gate it and log the evaluation plots."""
    example = holdout[data.features].head(5)
    info = impl.log_model(fit, MODEL_ARTIFACT, signature=model_signature(data.features, data.task, data.classes),
                          input_example=example)
    version = registry.register_challenger(conf, info.model_uri, run_id,
                                           {"run_date": run_date.isoformat(), "backend": impl.name,
                                            "task": data.task})
    decision, scores = gate.evaluate(conf, holdout, data.features, data.label, stats.label_mean, version,
                                     stats=stats, classes=data.classes)
    plots = _log_evaluation(holdout, data.label, scores, fit, data.task) if scores is not None else []
    gate.apply(conf, decision)
    _log_decision(decision)
    return info, version, decision, plots


def report_model_name(conf: Conf) -> str | None:
    """The folder of a model's train reports: None for the app's default model (``dt=<date>.json``)."""
    return conf.model_name if conf.model_name and conf.model_name != spec.default_name(conf) else None


def train_for_date(spark: SparkSession, conf: Conf, run_date: dt.date, *, backend: str | None = None,
                   shuffle_labels: bool = False, tune: int = 0,
                   tags: dict[str, str] | None = None, model: str | None = None) -> TrainOutcome:
    """Train, log, register and gate a model on the training set of ``run_date``.

    Parameters
    ----------
    model : str, optional
        The model spec (``conf/models/<model>.yaml``); default ``train.model`` or the only spec
        (:func:`lakeloop.train.spec.model_conf`).
    backend : str, optional
        A module of :mod:`lakeloop.train`; default ``train.backend``.
    shuffle_labels : bool
        Permute the training labels (diagnostic: the gate must refuse the model).
    tune : int
        Number of tuning trials (0: none); the best configuration is then trained in the cluster.
    tags : dict, optional
        Extra MLflow run tags (the job's run id).

    Returns
    -------
    :class:`TrainOutcome`
        Whether the model was promoted is ``outcome.decision.passed``; the caller decides the exit
        code (``jobs/train.py`` raises :class:`lakeloop.errors.GateRefused`).
    """
    conf = spec.model_conf(conf, model)
    report_model = report_model_name(conf)
    # the date's report always belongs to the latest run: a run that fails or is killed never leaves an
    # earlier run's outcome standing for the date
    started = {"run_date": run_date.isoformat(), "model": conf.model_name, "model_name": conf["mlflow.model_name"],
               "job_run_id": (tags or {}).get("lakeloop.job_run_id"), "status": "running"}
    report.write_run_report(conf, run_date, started, report_model)
    try:
        return _train(spark, conf, run_date, report_model, started, backend=backend, shuffle_labels=shuffle_labels,
                      tune=tune, tags=tags)
    except BaseException as exc:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
        report.write_run_report(conf, run_date, {**started, "status": "failed", "error": error}, report_model)
        raise


def _train(spark: SparkSession, conf: Conf, run_date: dt.date, report_model: str | None, started: dict[str, Any], *,
           backend: str | None, shuffle_labels: bool, tune: int, tags: dict[str, str] | None) -> TrainOutcome:
    import mlflow

    try:
        impl = check_backend(backend or conf["train.backend"], conf["train.task"])
    except ValueError as exc:
        raise ConfError(f"--backend: {exc}") from None
    registry.setup(conf)
    data = load_model_data(spark, conf, run_date, shuffle=shuffle_labels)
    params = {**impl.default_params(conf), **conf["train.params"]}
    holdout = holdout_frame(data, conf["train.gate_max_rows"], conf["train.seed"])
    stats = baselines.training_stats(data.train, data.features, data.label, data.task, data.classes,
                                     feature_fits=conf["train.feature_baselines"])
    try:
        tuned: dict[str, Any] = {}
        trial_ids: list[str] = []
        with mlflow.start_run(run_name=f"{impl.name}-{run_date.isoformat()}") as run:
            _log_inputs(conf, data, impl, run_date, shuffle_labels, tags or {})
            if tune:
                params, trial_ids, tuned = _tune(spark, conf, impl, data, params, tune)
            fit = impl.fit(spark, data, params, gpu=bool(conf.get("gpu.enabled")))
            _log_fit(fit)
            info, version, decision, plots = _register_and_gate(conf, impl, fit, data, holdout, stats,
                                                                run.info.run_id, run_date)
            payload = {**started, "status": "ok" if decision.passed else "refused", "mlflow_run_id": run.info.run_id,
                       "experiment_id": run.info.experiment_id, "backend": impl.name,
                       "model_version": version,
                       "model_uri": info.model_uri, "params": fit.params, "features": data.features,
                       "input_versions": data.input_versions, "shuffle_labels": shuffle_labels,
                       "positive_rate": stats.label_mean if data.task == "binary" else None,
                       "task": data.task, "classes": data.classes, "label": data.label,
                       "split": data.split, "training_stats": stats.as_dict(),
                       "tuning": tuned, "artifacts": plots, "gate": decision.as_dict(), "tags": tags or {}}
            path = report.write_run_report(conf, run_date, payload, report_model)
            mlflow.log_dict(payload, f"report/{report.report_name(run_date)}")
    finally:
        data.train.unpersist()
        data.valid.unpersist()
    return TrainOutcome(run_id=run.info.run_id, model_version=version, decision=decision,
                        report_path=path, trial_run_ids=trial_ids, report=payload)
