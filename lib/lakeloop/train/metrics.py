"""Holdout metrics of the three model tasks, and which direction is better.

Every metric takes the labels ``y`` and the task's prediction ``p`` as numpy arrays:

========== ============================== =====================================================
task       prediction ``p``               metrics (better)
========== ============================== =====================================================
binary     positive-class probability (n) ``auc`` (higher), ``pr_auc`` (higher), ``logloss`` (lower)
regression predicted value (n)            ``rmse`` (lower), ``mae`` (lower), ``r2`` (higher)
multiclass class probabilities (n, k)     ``logloss`` (lower), ``accuracy`` (higher), ``macro_f1`` (higher)
========== ============================== =====================================================

Multiclass labels are the class indices ``0 .. k-1`` (column ``j`` of ``p`` is class ``j``).
:func:`improvement` turns two values into "how much better the first is", positive when better, so
callers never branch on the direction themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Metric", "METRICS", "metric", "names", "compute", "improvement"]

_EPS = 1e-6


@dataclass(frozen=True)
class Metric:
    """One holdout metric of one task."""

    name: str
    task: str
    higher_is_better: bool
    fn: Callable[[np.ndarray, np.ndarray], float]


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


def _binary_logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - p) ** 2)))


def _mae(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.abs(y - p)))


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    total = float(np.sum((y - np.mean(y)) ** 2))
    return float(1.0 - np.sum((y - p) ** 2) / total) if total > 0 else 0.0


def _multi_logloss(y: np.ndarray, p: np.ndarray) -> float:
    picked = np.clip(p[np.arange(len(y)), y.astype(int)], _EPS, 1.0)
    return float(-np.mean(np.log(picked)))


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(np.argmax(p, axis=1) == y.astype(int)))


def _macro_f1(y: np.ndarray, p: np.ndarray) -> float:
    """Mean F1 over the classes present in ``y`` or predicted (a class never seen nor predicted is skipped)."""
    pred, y = np.argmax(p, axis=1), y.astype(int)
    scores = []
    for c in np.union1d(np.unique(y), np.unique(pred)):
        tp = np.sum((pred == c) & (y == c))
        denom = np.sum(pred == c) + np.sum(y == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores)) if scores else 0.0


_ALL = (Metric("auc", "binary", True, _auc), Metric("pr_auc", "binary", True, _pr_auc),
        Metric("logloss", "binary", False, _binary_logloss),
        Metric("rmse", "regression", False, _rmse), Metric("mae", "regression", False, _mae),
        Metric("r2", "regression", True, _r2),
        Metric("logloss", "multiclass", False, _multi_logloss),
        Metric("accuracy", "multiclass", True, _accuracy), Metric("macro_f1", "multiclass", True, _macro_f1))
# task -> metric name -> Metric
METRICS: dict[str, dict[str, Metric]] = {}
for _m in _ALL:
    METRICS.setdefault(_m.task, {})[_m.name] = _m


def names(task: str) -> tuple[str, ...]:
    """The metric names of ``task``."""
    return tuple(METRICS[task])


def metric(task: str, name: str) -> Metric:
    """The metric ``name`` of ``task``; ValueError names the task's metrics."""
    if task not in METRICS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(METRICS)}")
    found = METRICS[task].get(name)
    if found is None:
        raise ValueError(f"unknown {task} metric {name!r}: expected one of {', '.join(METRICS[task])}")
    return found


def compute(task: str, name: str, y: np.ndarray, p: np.ndarray) -> float:
    """``name`` of predictions ``p`` against labels ``y``."""
    return metric(task, name).fn(np.asarray(y, dtype=float), np.asarray(p, dtype=float))


def improvement(task: str, name: str, value: float, reference: float) -> float:
    """How much ``value`` is better than ``reference`` (negative when worse), whatever the direction."""
    return value - reference if metric(task, name).higher_is_better else reference - value
