"""What a scoring task runs, shared by both bulk paths of :mod:`lakeloop.infer` (``mapInArrow`` and the file
path of :mod:`lakeloop.score_files`) and by online scoring: the model reference, the per-worker scorer cache, the
feature matrix of an Arrow batch and the model's outputs per task."""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.errors import DataQualityError, LakeloopError
from lakeloop.scoring import PREDICTION, SCORE

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark import Accumulator

__all__ = ["ModelRef", "load_scorer", "task_scorer", "task_outputs", "feature_matrix", "scored_batch",
           "output_fields", "check_scoring_rows"]


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and where its artifacts are (what executors load)."""

    name: str
    version: str
    artifact_uri: str
    flavors: tuple[str, ...] = ()
    features: tuple[str, ...] = ()  # the signature's input columns (empty: the model has no signature)


class _Scorer:
    """The raw output of a loaded model for a float32 feature matrix (:func:`task_outputs` reads it)."""

    def __init__(self, ref: ModelRef, features: Sequence[str]) -> None:
        self.features = list(features)
        if "xgboost" in ref.flavors:
            import mlflow.xgboost

            booster = mlflow.xgboost.load_model(ref.artifact_uri)
            # a Spark task owns one core; more threads would fight the other tasks
            booster.set_param({"nthread": 1})
            if booster.feature_names and list(booster.feature_names) != self.features:
                raise LakeloopError(f"model {ref.name}/{ref.version} expects features {booster.feature_names}, "
                                    f"the scoring frame has {self.features}")
            self._booster, self._pyfunc = booster, None
        else:
            import mlflow.pyfunc

            self._booster, self._pyfunc = None, mlflow.pyfunc.load_model(ref.artifact_uri)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        import numpy as np

        if self._booster is not None:
            return np.asarray(self._booster.inplace_predict(matrix, validate_features=False))
        import pandas as pd

        out = self._pyfunc.predict(pd.DataFrame(matrix.astype("float64"), columns=self.features))
        if hasattr(out, "columns") and any(str(c).startswith("p_") for c in out.columns):
            out = out[[c for c in out.columns if str(c).startswith("p_")]]  # a multiclass signature's p_0..p_k-1
        return np.asarray(out)


def task_outputs(raw: np.ndarray, task: str) -> list[np.ndarray]:
    """``[score]``, or ``[score, prediction]`` for multiclass, from a model's raw output (see :func:`score`)."""
    import numpy as np

    raw = np.asarray(raw, dtype="float64")
    if task == "multiclass":
        if raw.ndim != 2:
            raise LakeloopError(f"a multiclass model must output class probabilities, got shape {raw.shape}")
        return [raw.max(axis=1), raw.argmax(axis=1).astype("int32")]
    if raw.ndim == 2:
        raw = raw[:, -1] if task == "binary" else raw[:, 0]  # binary: the positive class's column
    return [raw]


# worker-side cache: Python workers are reused across tasks (spark.python.worker.reuse), so every
# partition after the first one a worker runs finds the model here
_SCORERS: dict[tuple[str, tuple[str, ...]], _Scorer] = {}
_SCORERS_LOCK = threading.Lock()


def load_scorer(ref: ModelRef, features: Sequence[str]) -> tuple[_Scorer, bool]:
    """This process's scorer of ``ref`` and whether it was loaded by this call."""
    key = (ref.artifact_uri, tuple(features))
    with _SCORERS_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is not None:
            return scorer, False
        scorer = _SCORERS[key] = _Scorer(ref, features)
        return scorer, True


def task_scorer(ref: ModelRef, features: Sequence[str], loads: Accumulator | None = None) -> _Scorer:
    """The scorer a task uses: loaded once per Python worker, which then freezes its heap.

    PySpark ``gc.collect()``s after every task of a reused worker; frozen, the model's objects are not
    scanned again.  ``loads`` counts the loads.
    """
    scorer, loaded = load_scorer(ref, features)
    if loaded:
        gc.freeze()
        if loads is not None:
            loads.add(1)
    return scorer


def feature_matrix(batch: pa.RecordBatch, columns: Sequence[str]) -> np.ndarray:
    """A C-ordered float32 matrix of ``columns`` (nulls as NaN: missing values for the model)."""
    import numpy as np

    matrix = np.empty((batch.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        matrix[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    return matrix


def scored_batch(scorer: _Scorer, batch: pa.RecordBatch, features: Sequence[str], keep: Sequence[str],
                 task: str) -> pa.RecordBatch:
    """``keep`` columns of ``batch`` and the model's outputs for ``task`` (:func:`task_outputs`)."""
    import pyarrow as pa

    outputs = task_outputs(scorer(feature_matrix(batch, features)), task)
    return pa.RecordBatch.from_arrays([*(batch.column(c) for c in keep), *map(pa.array, outputs)],
                                      names=[*keep, *_outputs(task)])


def _outputs(task: str) -> tuple[str, ...]:
    return (SCORE, PREDICTION) if task == "multiclass" else (SCORE,)


def output_fields(task: str) -> list[Any]:
    """The Spark fields of the model's outputs for ``task``: ``score`` (double), for multiclass ``prediction``."""
    from pyspark.sql.types import DoubleType, IntegerType, StructField

    types = {SCORE: DoubleType(), PREDICTION: IntegerType()}
    return [StructField(c, types[c], True) for c in _outputs(task)]


def check_scoring_rows(rows: int, min_rows: int, where: str) -> None:
    """DataQualityError (exit 3) when fewer than ``min_rows`` (at least 1) rows are to be scored.

    Raised before anything is written: the predictions table and the serving store keep their versions.
    """
    wanted = max(1, min_rows)
    if rows < wanted:
        raise DataQualityError(f"{where}: {rows} rows to score, fewer than the minimum {wanted} (infer.min_rows / "
                               "the model spec's scoring.min_rows); the predictions table and the serving store "
                               "are left unchanged")
