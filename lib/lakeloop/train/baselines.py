"""Naive baselines a first model must beat (the gate's reference when there is no champion).

Generic, per task (from training-set statistics only; the holdout is only scored):

``binary``
    ``positive_rate``: the training positive rate as a constant score; ``feature:<name>`` (when
    ``gate.feature_baselines``): each single feature through a one-variable least-squares fit of the
    label on the training rows (a linear probability, clipped to [0, 1]; its ranking is the feature's,
    oriented by the sign of its training covariance with the label).
``regression``
    ``mean``: the training mean; ``feature:<name>``: each single numeric feature through a one-variable
    linear fit.
``multiclass``
    ``majority``: all probability on the most frequent training class; ``class_frequencies``: the
    training class frequencies for every row.

A missing feature value (null/NaN) takes the feature's training mean (so the fit predicts the mean label).

Domain baselines come only from the model spec (``gate.baselines``: name -> ``{column, transform}``):
``transform: clip`` uses the column as a score clipped to [0, 1] (missing: the training positive rate
or mean); ``transform: max_scale`` divides it by its holdout maximum (missing: 0).  The recommender's
spec declares ``item_conversion`` and ``item_popularity`` this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

__all__ = ["TrainingStats", "training_stats", "baseline_scores", "TRANSFORMS"]

TRANSFORMS = ("clip", "max_scale")


@dataclass
class TrainingStats:
    """What the baselines know of the training rows."""

    task: str
    rows: int
    label_mean: float
    # feature -> (mean, slope, intercept) of the one-variable fit label ~ feature
    fits: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rows": self.rows, "label_mean": self.label_mean,
                "class_counts": self.class_counts}


def training_stats(train: DataFrame, features: list[str], label: str, task: str, classes: int = 0,
                   feature_fits: bool = True) -> TrainingStats:
    """One aggregation over the training rows (plus a class count for multiclass)."""
    from pyspark.sql import functions as F

    y = F.col(label).cast("double")
    cols = [F.count(F.lit(1)).alias("n"), F.avg(y).alias("ym")]
    if feature_fits and task != "multiclass":
        for i, f in enumerate(features):
            x = F.nanvl(F.col(f).cast("double"), F.lit(None).cast("double"))
            cols += [F.avg(x).alias(f"m{i}"), F.var_pop(x).alias(f"v{i}"), F.covar_pop(x, y).alias(f"c{i}"),
                     F.avg(F.when(x.isNotNull(), y)).alias(f"y{i}")]
    row = train.agg(*cols).first()
    stats = TrainingStats(task=task, rows=int(row["n"]), label_mean=float(row["ym"] or 0.0))
    if feature_fits and task != "multiclass":
        for i, f in enumerate(features):
            mean, var, cov = row[f"m{i}"], row[f"v{i}"], row[f"c{i}"]
            if mean is None:
                continue  # all missing: no fit
            slope = float(cov) / float(var) if var and cov is not None else 0.0
            y_mean = float(row[f"y{i}"]) if row[f"y{i}"] is not None else stats.label_mean
            stats.fits[f] = (float(mean), slope, y_mean - slope * float(mean))
    if task == "multiclass":
        counts = {int(r[0]): int(r[1]) for r in train.groupBy(y.cast("int")).count().collect()}
        stats.class_counts = [counts.get(j, 0) for j in range(classes)]
    return stats


def _feature_fit(holdout: pd.DataFrame, name: str, fit: tuple[float, float, float], task: str) -> np.ndarray:
    mean, slope, intercept = fit
    x = holdout[name].astype("float64").fillna(mean).to_numpy()
    pred = intercept + slope * x
    return np.clip(pred, 0.0, 1.0) if task == "binary" else pred


def _domain(holdout: pd.DataFrame, spec: dict[str, Any], fallback: float) -> np.ndarray:
    values = holdout[spec["column"]].astype("float64")
    if spec.get("transform", "clip") == "max_scale":
        values = values.fillna(0.0).to_numpy()
        top = values.max() if len(values) else 0.0
        return values / top if top > 0 else np.full(len(values), fallback)
    return np.clip(values.fillna(fallback).to_numpy(), 0.0, 1.0)


def baseline_scores(stats: TrainingStats, holdout: pd.DataFrame,
                    domain: dict[str, dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Every baseline's prediction for the holdout rows (see the module docstring)."""
    n = len(holdout)
    out: dict[str, np.ndarray] = {}
    if stats.task == "multiclass":
        counts = np.asarray(stats.class_counts, dtype=float)
        freq = counts / counts.sum() if counts.sum() else np.full(len(counts), 1.0 / max(len(counts), 1))
        majority = np.zeros(len(counts))
        majority[int(np.argmax(counts))] = 1.0
        out["majority"] = np.tile(majority, (n, 1))
        out["class_frequencies"] = np.tile(freq, (n, 1))
        return out
    out["positive_rate" if stats.task == "binary" else "mean"] = np.full(n, stats.label_mean)
    for name, spec in (domain or {}).items():
        out[name] = _domain(holdout, spec, stats.label_mean)
    for name, fit in stats.fits.items():
        out[f"feature:{name}"] = _feature_fit(holdout, name, fit, stats.task)
    return out
