"""The training backend contract.

A backend is **one module** ``lakeloop.train.<name>`` that defines a module-level ``BACKEND``: an
instance of a :class:`Backend` subclass.  :func:`get_backend` imports the module by name, so adding
a backend (``tfos``, ``torch``) means adding one file; nothing else in :mod:`lakeloop.train`
changes.  A third-party backend is named by dotted path, ``package.module:Name`` (``train.backend`` or
a model spec's ``backend``), where ``Name`` is a :class:`Backend` subclass (instantiated without
arguments) or an instance of one.  The rest of the pipeline (data loading, MLflow tracking, registry, evaluation gate,
tuning, reports) is backend-agnostic and talks to a backend only through this interface.

Contract
--------
``name``
    The backend's ``--backend`` name, equal to its module name.
``tasks``
    The model tasks it trains (:mod:`lakeloop.train.tasks`); a model spec asking for another one is
    refused when the job starts (:func:`check_backend`).  ``data.task`` tells :meth:`fit` which one;
    ``data.classes`` is the number of classes of a multiclass task.
``default_params(conf)``
    Hyper-parameters used when neither ``train.params`` nor tuning gives one.  Plain JSON-able
    values; they are logged as MLflow params.
``fit(spark, data, params, gpu)``
    Train **inside the cluster** on ``data.train`` (a Spark DataFrame holding ``data.features``
    and ``data.label``), using ``data.valid`` for per-round/per-epoch evaluation.  When ``gpu`` is
    true every training task pins exactly the GPU Spark assigned to it
    (:mod:`lakeloop.train.gpu`); otherwise the same code runs on CPU.  Returns a
    :class:`FitResult` whose ``history`` maps ``"<dataset>-<metric>"`` (e.g.
    ``"validation-logloss"``) to one value per boosting round / epoch.
``log_model(result, name, signature, input_example)``
    Log ``result.model`` to the active MLflow run with the backend's MLflow flavor and return the
    :class:`mlflow.models.model.ModelInfo`.  The logged model **must** load with
    :func:`mlflow.pyfunc.load_model` and its ``predict`` must take a pandas frame holding the
    feature columns and return the task's prediction per row: ``binary``, the positive-class
    probability (a 1-d array or series, or a frame/2-d array whose last column is that probability);
    ``regression``, the value; ``multiclass``, an ``(n, classes)`` array of class probabilities
    (:func:`lakeloop.train.tasks.predictions`).  The evaluation gate and bulk
    inference rely on this and on nothing else.
``fit_local(train, valid, features, label, params, device)`` and ``predict_local(model, frame)``
    (optional; needed by ``--tune``)
    Train single-node on pandas frames inside one Spark task and return a :class:`FitResult`;
    score a pandas frame with the resulting model (positive-class probabilities).  ``device``
    comes from :func:`lakeloop.train.gpu.task_device` (``"cpu"`` or ``"cuda:N"``).  Backends that
    cannot do this leave ``supports_local_fit`` false and ``--tune`` is refused.
``device_params(device)``
    Backend parameters that pin ``device`` (for xgboost ``{"device": "cuda:N"}``), so tests and
    tuning tasks can see exactly which device a task would use.

A backend never touches MLflow runs, the registry or the gate; it receives everything it needs
as arguments and returns plain results.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf

__all__ = ["Backend", "FitResult", "TrainingData", "get_backend", "check_backend", "BACKENDS"]

# known backend modules; any importable lakeloop.train.<name> with a BACKEND also works
BACKENDS = ("xgboost", "tfos", "torch", "bigdl")


@dataclass
class TrainingData:
    """What every backend trains on.

    ``train`` and ``valid`` are Spark frames holding ``features`` and ``label``; ``valid`` is the
    holdout also used by the evaluation gate.  ``input_versions`` maps each input table name to the
    Delta version read, so a run can be reproduced.
    """

    train: DataFrame
    valid: DataFrame
    features: list[str]
    label: str = "label"
    input_versions: dict[str, int | None] = field(default_factory=dict)
    task: str = "binary"
    classes: int = 0
    split: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """A trained model and its training history, as returned by :meth:`Backend.fit`.

    ``model`` is the backend's native model (an ``xgboost.Booster``, a Keras model, a torch
    module); ``history`` maps ``"<dataset>-<metric>"`` to one value per round/epoch; ``params`` are
    the effective hyper-parameters; ``feature_importance`` (optional) maps feature names to a
    non-negative importance for the evaluation report.
    """

    model: Any
    history: dict[str, list[float]]
    params: dict[str, Any]
    feature_importance: dict[str, float] = field(default_factory=dict)


class Backend(ABC):
    """One way of training a model in the cluster (see the module docstring)."""

    name: ClassVar[str]
    supports_local_fit: ClassVar[bool] = False
    tasks: ClassVar[tuple[str, ...]] = ("binary",)

    @abstractmethod
    def default_params(self, conf: Conf) -> dict[str, Any]:
        """Hyper-parameters used when nothing overrides them."""

    @abstractmethod
    def fit(self, spark: SparkSession, data: TrainingData, params: dict[str, Any], *,
            gpu: bool = False) -> FitResult:
        """Train in the cluster on ``data.train``, evaluating on ``data.valid`` every round."""

    @abstractmethod
    def log_model(self, result: FitResult, name: str, *, signature: ModelSignature,
                  input_example: pd.DataFrame) -> ModelInfo:
        """Log ``result.model`` to the active MLflow run as a pyfunc-loadable model."""

    @abstractmethod
    def device_params(self, device: str) -> dict[str, Any]:
        """Backend parameters that pin ``device`` (``"cpu"`` or ``"cuda:N"``)."""

    def fit_local(self, train: pd.DataFrame, valid: pd.DataFrame, features: list[str], label: str,
                  params: dict[str, Any], *, device: str = "cpu", task: str = "binary",
                  classes: int = 0) -> FitResult:
        """Single-node training inside one Spark task (tuning trials) for ``task``."""
        raise NotImplementedError(f"backend {self.name!r} cannot train single-node trials")

    def predict_local(self, model: Any, frame: pd.DataFrame) -> Any:
        """The task's prediction of ``model`` (from :meth:`fit_local`) for ``frame``."""
        raise NotImplementedError(f"backend {self.name!r} cannot score single-node trials")


def _dotted_backend(path: str) -> Backend:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"backend {path!r}: module {module_name} not found ({exc})") from None
    found = getattr(module, attr, None)
    if isinstance(found, type) and issubclass(found, Backend):
        found = found()
    if not isinstance(found, Backend):
        raise ValueError(f"backend {path!r}: {attr} is not a lakeloop.train.base.Backend subclass or instance")
    return found


def check_backend(name: str, task: str) -> Backend:
    """The backend ``name`` if it trains ``task``; ValueError says which tasks it does train."""
    backend = get_backend(name)
    if task not in backend.tasks:
        raise ValueError(f"backend {backend.name!r} does not train {task} models (it trains "
                         f"{', '.join(backend.tasks)})")
    return backend


def get_backend(name: str) -> Backend:
    """The ``BACKEND`` of module ``lakeloop.train.<name>``, or the class/instance at ``package.module:Name``.

    ValueError names the known backends.
    """
    if ":" in name:
        return _dotted_backend(name)
    if not name.isidentifier():
        raise ValueError(f"backend {name!r}: expected one of {', '.join(BACKENDS)}")
    try:
        module = importlib.import_module(f"lakeloop.train.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"lakeloop.train.{name}":
            raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}") from None
        raise
    backend = getattr(module, "BACKEND", None)
    if not isinstance(backend, Backend):
        raise ValueError(f"lakeloop.train.{name} defines no BACKEND (a lakeloop.train.base.Backend)")
    return backend
