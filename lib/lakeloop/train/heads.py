"""The output head of the neural backends (``torch``, ``tfos``, ``bigdl``) per model task.

One place says, for every task, how wide a network's last layer is, which activation and loss it
trains with, which metric its history reports per epoch, and how the network's outputs become the
task's prediction (:mod:`lakeloop.train.tasks`):

============ =========== ========== =================================== ============ =========================
task         output units activation loss (Keras name)                   history      prediction
============ =========== ========== =================================== ============ =========================
binary       1           sigmoid    ``binary_crossentropy``             ``auc``      positive-class probability
regression   1           linear     ``mean_squared_error``              ``rmse``     the value
multiclass   classes     softmax    ``sparse_categorical_crossentropy`` ``accuracy`` ``(n, classes)`` probabilities
============ =========== ========== =================================== ============ =========================

Each backend maps the loss name onto its framework's loss.  A regression network is trained on the
target standardised with the training mean and standard deviation (:func:`target_moments`), so
that its last layer starts at the right scale; the backend undoes it where it standardises its
inputs (inside the network for ``torch`` and ``tfos``, in the logged model for ``bigdl``).

This module imports numpy only (it is used in torch and TensorFlow worker processes and by the
``bigdl`` pyfunc).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lakeloop.train import metrics

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["Head", "ACTIVATIONS", "head", "target_moments", "activate", "targets", "prediction", "validation_metric"]

_ACTIVATION = {"binary": "sigmoid", "regression": "linear", "multiclass": "softmax"}
_LOSS = {"binary": "binary_crossentropy", "regression": "mean_squared_error",
         "multiclass": "sparse_categorical_crossentropy"}
_METRIC = {"binary": "auc", "regression": "rmse", "multiclass": "accuracy"}


@dataclass(frozen=True)
class Head:
    """The output layer of a network for ``task``: ``units`` outputs (see the module docstring)."""

    task: str
    units: int

    @property
    def activation(self) -> str:
        """The last layer's activation: ``sigmoid``, ``linear`` or ``softmax``."""
        return _ACTIVATION[self.task]

    @property
    def loss(self) -> str:
        """The training loss, by its Keras name."""
        return _LOSS[self.task]

    @property
    def metric(self) -> str:
        """The per-epoch validation metric of the history (a :mod:`lakeloop.train.metrics` name)."""
        return _METRIC[self.task]


def head(task: str, classes: int = 0) -> Head:
    """The head of ``task`` (``classes`` outputs for multiclass); ValueError for anything else."""
    if task not in _ACTIVATION:
        raise ValueError(f"no network head for task {task!r}: expected one of {', '.join(_ACTIVATION)}")
    if task != "multiclass":
        return Head(task, 1)
    if classes < 2:
        raise ValueError(f"a multiclass head needs at least 2 classes, got {classes}")
    return Head(task, int(classes))


def target_moments(df: DataFrame, label: str, task: str) -> tuple[float, float]:
    """Mean and standard deviation a regression target is standardised with; ``(0, 1)`` for the other tasks."""
    if task != "regression":
        return 0.0, 1.0
    from lakeloop.train.prep import feature_moments

    means, stds = feature_moments(df, [label])
    return means[0], stds[0]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "linear": lambda x: x,
    "softmax": _softmax,
}
ACTIVATIONS = tuple(_ACTIVATIONS)


def activate(name: str, x: np.ndarray) -> np.ndarray:
    """The activation ``name`` (one of :data:`ACTIVATIONS`) applied to ``x`` (rows x units)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name](x)


def targets(h: Head, y: np.ndarray) -> np.ndarray:
    """Labels ``y`` (shape ``(n, 1)``, float) as the loss wants them: class indices ``(n,)`` int64 for multiclass."""
    if h.task == "multiclass":
        return np.asarray(y).reshape(-1).astype(np.int64)
    return y


def prediction(h: Head, outputs: Any, *, logits: bool = False, target: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """The task's prediction (float64) from a network's ``outputs`` (rows x units).

    ``logits``: the outputs are before the head's activation (the ``torch`` network), which is applied here;
    ``target``: the mean and standard deviation a regression network's output is still standardised with
    (``bigdl``; the other backends undo it inside the network).
    """
    out = np.asarray(outputs, dtype=np.float64)
    if logits:
        out = activate(h.activation, out)
    if h.task == "multiclass":
        return out
    if h.task == "regression":
        return out[:, 0] * target[1] + target[0]
    return out[:, -1]


def validation_metric(h: Head, y: np.ndarray, outputs: Any, *, logits: bool = False) -> float:
    """The head's history metric of ``outputs`` against labels ``y``; NaN for AUC on a one-class holdout."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if h.task == "binary" and len(np.unique(y)) < 2:
        return float("nan")
    return metrics.compute(h.task, h.metric, y, prediction(h, outputs, logits=logits))
