"""The model tasks: what a label must look like, what a model predicts, and its MLflow signature.

``binary``
    Labels 0/1; the model predicts the positive-class probability (one column).
``regression``
    Finite numeric labels; the model predicts the value.
``multiclass``
    Labels are the class indices ``0 .. k-1`` (``k`` = ``classes``, at least 3, from the training set);
    the model predicts one probability per class (columns ``p_0 .. p_{k-1}``) and serving reads the
    predicted ``label`` (the arg-max) and its probability.

:func:`predictions` turns what a pyfunc model returned into the task's array and refuses anything
else (wrong shape, NaN, probabilities outside [0, 1]): the gate's infra check and bulk inference
rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.train import metrics

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

__all__ = ["TASKS", "Task", "get_task", "predictions", "signature", "probability_columns"]

TASKS = ("binary", "regression", "multiclass")


@dataclass(frozen=True)
class Task:
    """A task name and its default gate metric."""

    name: str
    default_metric: str

    @property
    def metrics(self) -> tuple[str, ...]:
        return metrics.names(self.name)


_TASKS = {"binary": Task("binary", "auc"), "regression": Task("regression", "rmse"),
          "multiclass": Task("multiclass", "logloss")}


def get_task(name: str) -> Task:
    """The :class:`Task` ``name``; ValueError names the tasks."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASKS)}")
    return _TASKS[name]


def probability_columns(classes: int) -> list[str]:
    """The class-probability column names of a multiclass model's output."""
    return [f"p_{j}" for j in range(classes)]


def _array(prediction: Any) -> np.ndarray:
    return np.asarray(prediction.to_numpy() if hasattr(prediction, "to_numpy") else prediction, dtype=float)


def predictions(task: str, prediction: Any, rows: int, classes: int = 0) -> np.ndarray:
    """A pyfunc prediction as the task's checked array (see the module docstring).

    binary: 1-d positive-class probabilities (of a 2-d output, its last column); regression: 1-d
    finite values; multiclass: ``(rows, classes)`` probabilities (the columns ``p_*`` of a frame).
    """
    if task == "multiclass":
        if hasattr(prediction, "columns"):
            prediction = prediction[[c for c in prediction.columns if str(c).startswith("p_")]]
        arr = _array(prediction)
        if arr.ndim != 2 or arr.shape != (rows, classes):
            raise ValueError(f"prediction has shape {arr.shape}, expected ({rows}, {classes})")
    else:
        arr = _array(prediction)
        if task == "binary" and arr.ndim == 2:
            arr = arr[:, -1]
        if arr.ndim != 1 or len(arr) != rows:
            raise ValueError(f"prediction has shape {arr.shape}, expected ({rows},)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("predictions are not finite" + (" probabilities in [0, 1]" if task != "regression" else ""))
    if task != "regression" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError("predictions are not finite probabilities in [0, 1]")
    return arr


def signature(task: str, features: list[str], classes: int = 0) -> ModelSignature:
    """Inputs: the feature columns as doubles (NaN = missing); outputs: the task's prediction."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("double", f) for f in features])
    if task == "multiclass":
        outputs = Schema([ColSpec("double", c) for c in probability_columns(classes)])
    else:
        outputs = Schema([ColSpec("double")])
    return ModelSignature(inputs=inputs, outputs=outputs)
