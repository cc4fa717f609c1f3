"""Parallel hyper-parameter search inside the cluster.

``sample_space`` draws ``n`` distinct configurations (seeded) from ``train.tune_space`` (param ->
list of values).  :func:`run_trials` collects a seeded sample of the training rows (at most
``train.tune_sample_rows``) and the holdout to the driver, broadcasts them, and runs **one trial
per Spark task**: each task pins the device Spark assigned to it (:mod:`lakeloop.train.gpu`),
trains a single-node model with the backend's :meth:`~lakeloop.train.base.Backend.fit_local` and
scores the holdout with the gate metric.  The driver then logs every trial as a nested MLflow run
(:func:`log_trials`) and the best configuration is trained in the cluster and gated like any other.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.train import gpu, metrics, registry, tasks

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.train.base import Backend, TrainingData

__all__ = ["Trial", "sample_space", "run_trials", "best_trial", "log_trials"]


@dataclass
class Trial:
    """One finished trial: its parameters, holdout score, per-round history and where it ran."""

    index: int
    params: dict[str, Any]
    value: float
    history: dict[str, list[float]]
    device: str
    partition: int


def sample_space(space: dict[str, list[Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` distinct configurations drawn (seeded) from the grid ``space``; fewer if the grid is smaller."""
    if n < 1:
        raise ValueError(f"--tune {n}: expected at least one trial")
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"train.tune_space.{key}: expected a non-empty list of values")
    keys = sorted(space)
    grid = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(space[k] for k in keys))]
    return random.Random(seed).sample(grid, min(n, len(grid)))


def _trial_fn(backend: Backend, train_b: Any, valid_b: Any, data: TrainingData, base: dict[str, Any],
              metric: str):
    features, label, task, classes = list(data.features), data.label, data.task, data.classes

    def run(item: tuple[int, dict[str, Any]]) -> Trial:
        from pyspark import TaskContext

        index, overrides = item
        params = {**base, **overrides}
        device = gpu.task_device()
        result = backend.fit_local(train_b.value, valid_b.value, features, label, params, device=device,
                                   task=task, classes=classes)
        valid = valid_b.value
        p = tasks.predictions(task, backend.predict_local(result.model, valid), len(valid), classes)
        return Trial(index=index, params=overrides, value=metrics.compute(task, metric, valid[label].to_numpy(), p),
                     history=result.history, device=device, partition=TaskContext.get().partitionId())

    return run


def run_trials(spark: SparkSession, backend: Backend, data: TrainingData, base: dict[str, Any],
               configs: list[dict[str, Any]], *, metric: str, sample_rows: int, seed: int) -> list[Trial]:
    """Train and score every configuration in ``configs``, one Spark task each."""
    if not backend.supports_local_fit:
        raise ValueError(f"backend {backend.name!r} does not support --tune (no single-node trials)")
    columns = [*data.features, data.label]
    total = data.train.count()
    train = data.train.select(*columns)
    if total > sample_rows:
        train = train.sample(fraction=min(1.0, 1.1 * sample_rows / total), seed=seed).limit(sample_rows)
    sc = spark.sparkContext
    train_b = sc.broadcast(train.toPandas())
    valid_b = sc.broadcast(data.valid.select(*columns).toPandas())
    try:
        fn = _trial_fn(backend, train_b, valid_b, data, base, metric)
        return sc.parallelize(list(enumerate(configs)), len(configs)).map(fn).collect()
    finally:
        train_b.unpersist()
        valid_b.unpersist()


def best_trial(trials: list[Trial], metric: str, task: str = "binary") -> Trial:
    """The trial with the best ``metric`` of ``task`` (ties: the earliest)."""
    sign = 1.0 if metrics.metric(task, metric).higher_is_better else -1.0
    return max(trials, key=lambda t: (sign * t.value, -t.index))


def log_trials(trials: list[Trial], metric: str) -> list[str]:
    """Log each trial as a nested run of the active MLflow run; returns the nested run ids."""
    import mlflow

    ids = []
    for trial in sorted(trials, key=lambda t: t.index):
        with mlflow.start_run(run_name=f"trial-{trial.index}", nested=True) as run:
            mlflow.log_params({**trial.params, "device": trial.device})
            mlflow.set_tags({"lakeloop.trial": str(trial.index), "lakeloop.partition": str(trial.partition)})
            registry.log_history(trial.history)
            mlflow.log_metric(f"holdout_{metric}", trial.value)
            ids.append(run.info.run_id)
    return ids

