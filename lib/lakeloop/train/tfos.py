"""The ``tfos`` backend: a Keras MLP trained with TensorFlowOnSpark (``InputMode.SPARK``).

One TensorFlow worker per executor (``train.num_workers``, capped by the executors the cluster
has; one in ``local`` mode, where all tasks share one executor).  Spark feeds the training rows
(the feature columns and the label) to the workers through TFoS's data feed for ``epochs``
passes; with more than one worker they train one model together with
``MultiWorkerMirroredStrategy``.  The holdout (at most ``valid_max_rows`` rows, seeded sample)
travels with the worker arguments and is evaluated after every epoch, so ``history`` holds
``training-loss``, ``validation-loss`` and the task's metric on both (``training-auc`` /
``validation-auc``, ``-rmse`` or ``-accuracy``, :mod:`lakeloop.train.heads`) per epoch.

Tasks: ``binary``, ``regression`` and ``multiclass``; the output layer, the loss and the metric
come from :mod:`lakeloop.train.heads` (one sigmoid unit and binary cross-entropy; one linear unit
and mean squared error; a softmax over the classes and sparse categorical cross-entropy).  The
model standardises its inputs itself (a ``Normalization`` layer holding the training
means/variances, then missing values, NaN, become the mean) and a regression model ends in a
``Rescaling`` layer holding the target's training standard deviation and mean, so its last dense
unit learns the standardised target; the exported Keras file is the whole model.  Worker 0 saves
it with the history in ``export_dir`` (a directory every executor and the driver can reach;
default: a temporary directory, which suits single-host clusters).
The logged MLflow model is a pyfunc wrapper around that Keras file whose ``predict`` returns the
task's prediction (the positive-class probability, the value, or ``(n, classes)`` probabilities).

GPU: each TensorFlow process sees only the GPU Spark assigned to its task
(:func:`lakeloop.train.gpu.pin_tensorflow`, as ``/GPU:0``); without GPUs it runs on CPU.  All
TensorFlowOnSpark calls go through :mod:`lakeloop.train.tfos_adapter`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.train import heads, tfos_adapter
from lakeloop.train.base import Backend, FitResult, TrainingData
from lakeloop.train.prep import feature_moments, holdout_arrays

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf

__all__ = ["TFoSBackend", "BACKEND", "KerasModel", "build_model", "load_keras", "worker_main", "num_executors"]

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
_KERAS_ARTIFACT = "keras_model"
# share of a worker's rows one epoch consumes: partitions are not exactly even, and a worker that
# waits for rows that never come would stall the others
_FEED_SHARE = 0.9


@dataclass
class WorkerArgs:
    """Everything a TensorFlow worker needs (pickled to the executors)."""

    features: list[str]
    means: list[float]
    variances: list[float]
    hidden: list[int]
    learning_rate: float
    batch_size: int
    epochs: int
    steps_per_epoch: int
    seed: int
    valid_x: Any
    valid_y: Any
    export_dir: str
    head: heads.Head
    target: tuple[float, float]

    def __contains__(self, key: str) -> bool:
        # TFoS probes its arguments like an argparse namespace (``"num_gpus" in tf_args``)
        return key in self.__dict__


def _metric(head: heads.Head) -> Any:
    """The Keras metric of the head's history metric."""
    import keras

    made = {"auc": keras.metrics.AUC, "rmse": keras.metrics.RootMeanSquaredError,
            "accuracy": keras.metrics.SparseCategoricalAccuracy}
    return made[head.metric](name=head.metric)


def build_model(means: list[float], variances: list[float], hidden: list[int], learning_rate: float,
                head: heads.Head | None = None, target: tuple[float, float] = (0.0, 1.0)) -> Any:
    """The compiled Keras MLP: normalise, NaN -> mean, ReLU hidden layers, the head's output layer.

    A regression head's linear unit is followed by ``x * target_std + target_mean`` (``target``).
    """
    import keras

    head = head or heads.head("binary")
    # layers made in model order: Keras draws each initializer's seed when the layer is made
    layers = [keras.Input(shape=(len(means),)), keras.layers.Normalization(mean=means, variance=variances),
              _nan_to_zero_layer()(), *[keras.layers.Dense(units, activation="relu") for units in hidden],
              keras.layers.Dense(head.units, activation=head.activation)]
    if head.task == "regression":
        layers.append(keras.layers.Rescaling(scale=target[1], offset=target[0]))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=head.loss, metrics=[_metric(head)])
    return model


def _nan_to_zero_layer() -> type:
    """A registered Keras layer replacing NaN with 0 (after normalisation: the training mean)."""
    import keras

    name = "lakeloop>NanToZero"
    registered = keras.saving.get_registered_object(name)
    if registered is not None:
        return registered

    @keras.saving.register_keras_serializable(package="lakeloop", name="NanToZero")
    class NanToZero(keras.layers.Layer):
        def call(self, inputs):
            return keras.ops.where(keras.ops.isnan(inputs), keras.ops.zeros_like(inputs), inputs)

    return NanToZero


def load_keras(path: str) -> Any:
    """Load a model saved by :func:`worker_main`."""
    import keras

    _nan_to_zero_layer()
    return keras.saving.load_model(path)


def _pin_task_gpu() -> None:
    from pyspark import TaskContext

    from lakeloop.train import gpu

    # TFoS forks the TensorFlow process from the task's Python worker, so the task context is there
    if TaskContext.get() is not None:
        gpu.pin_tensorflow()


def _feed_batches(feed: Any, batch_size: int):
    import numpy as np

    while not feed.should_stop():
        rows = feed.next_batch(batch_size)
        if not rows:
            return
        block = np.asarray(rows, dtype=np.float32)
        yield block[:, :-1], block[:, -1:]


def worker_main(args: WorkerArgs, ctx: Any) -> None:
    """TFoS ``map_fun``: train on the fed rows; worker 0 saves the model and the history."""
    _pin_task_gpu()
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if ctx.num_workers > 1
                else tf.distribute.get_strategy())
    n_features = len(args.features)
    feed = ctx.get_data_feed(train_mode=True)
    dataset = tf.data.Dataset.from_generator(
        lambda: _feed_batches(feed, args.batch_size),
        output_signature=(tf.TensorSpec((None, n_features), tf.float32), tf.TensorSpec((None, 1), tf.float32)))
    options = tf.data.Options()
    # Spark already gave each worker its own rows
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.with_options(options)
    with strategy.scope():
        model = build_model(args.means, args.variances, args.hidden, args.learning_rate, args.head, args.target)
    fitted = model.fit(dataset, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       validation_data=(args.valid_x, args.valid_y), verbose=0)
    if ctx.task_index == 0:
        os.makedirs(args.export_dir, exist_ok=True)
        model.save(os.path.join(args.export_dir, MODEL_FILE))
        history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
        # written last and renamed into place: the driver waits for this file (see _await_export)
        partial = os.path.join(args.export_dir, HISTORY_FILE + ".tmp")
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(history, f)
        os.replace(partial, os.path.join(args.export_dir, HISTORY_FILE))
    feed.terminate()


def _await_export(export_dir: str, timeout: float) -> dict[str, list[float]]:
    """Worker 0's history, once it has saved the model.

    TFoS's shutdown does not wait for the TensorFlow processes: when the feed ran dry before
    worker 0 finished, the cluster is down while it is still saving.
    """
    path = os.path.join(export_dir, HISTORY_FILE)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise tfos_adapter.TFoSError(f"worker 0 saved no model in {export_dir} within {timeout:.0f} s; "
                                         "see the executor logs")
        time.sleep(0.5)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def num_executors(spark: SparkSession, requested: int) -> int:
    """TFoS workers: ``requested`` capped by the executors (one in ``local`` mode), at least 1."""
    sc = spark.sparkContext
    if sc.master == "local" or sc.master.startswith("local["):
        return 1
    # the executor memory status lists the driver too
    available = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
    return max(1, min(requested, available))


def _history(raw: dict[str, list[float]]) -> dict[str, list[float]]:
    """Keras history keys (``loss``, ``val_auc``) as ``training-loss``, ``validation-auc``."""
    return {(f"validation-{k[4:]}" if k.startswith("val_") else f"training-{k}"): v for k, v in raw.items()}


@dataclass
class KerasModel:
    """``FitResult.model`` of the tfos backend: the trained Keras model and the head it was trained with."""

    network: Any
    head: heads.Head


@functools.cache
def _prediction_model_class() -> type:
    """The pyfunc wrapper class, built on first use: TensorFlow processes never import MLflow."""
    import mlflow.pyfunc

    class KerasPrediction(mlflow.pyfunc.PythonModel):
        """pyfunc wrapper: the task's prediction of a saved Keras model for the feature columns."""

        def __init__(self, features: list[str], head: heads.Head) -> None:
            self.features = list(features)
            self.head = head
            self._model = None

        def load_context(self, context: Any) -> None:
            self._model = load_keras(context.artifacts[_KERAS_ARTIFACT])

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
            import numpy as np

            x = model_input[self.features].to_numpy(dtype=np.float32)
            return heads.prediction(self.head, self._model.predict(x, verbose=0, batch_size=8192))

    return KerasPrediction


class TFoSBackend(Backend):
    """Keras MLP trained in the cluster with TensorFlowOnSpark."""

    name = "tfos"
    tasks = ("binary", "regression", "multiclass")

    def default_params(self, conf: Conf) -> dict[str, Any]:
        return {"hidden": [32, 16], "learning_rate": 0.003, "batch_size": 64, "epochs": 3,
                "valid_max_rows": 20000, "seed": conf["train.seed"], "num_workers": conf["train.num_workers"],
                "export_dir": None}

    def device_params(self, device: str) -> dict[str, Any]:
        # TensorFlow numbers the visible GPUs from 0 once CUDA_VISIBLE_DEVICES is narrowed
        if device == "cpu":
            return {"CUDA_VISIBLE_DEVICES": "", "tf_device": "/CPU:0"}
        return {"CUDA_VISIBLE_DEVICES": device.removeprefix("cuda:"), "tf_device": "/GPU:0"}

    def fit(self, spark: SparkSession, data: TrainingData, params: dict[str, Any], *,
            gpu: bool = False) -> FitResult:
        from pyspark.sql import functions as F

        workers = num_executors(spark, int(params["num_workers"]))
        cols = [F.col(c).cast("double") for c in (*data.features, data.label)]
        rows = data.train.select(*cols).rdd.map(tuple).repartition(workers).cache()
        export_dir = params.get("export_dir") or tempfile.mkdtemp(prefix="lakeloop-tfos-")
        try:
            args = self._worker_args(data, params, rows.count(), workers, export_dir)
            tfos_adapter.train_cluster(spark.sparkContext, worker_main, args, workers, rows, args.epochs)
            history = _history(_await_export(export_dir, float(params.get("export_timeout", 600))))
            model = KerasModel(load_keras(os.path.join(export_dir, MODEL_FILE)), args.head)
        finally:
            rows.unpersist()
            if not params.get("export_dir"):
                shutil.rmtree(export_dir, ignore_errors=True)
        effective = {k: v for k, v in params.items() if k not in ("export_dir", "export_timeout")}
        return FitResult(model=model, history=history,
                         params={**effective, "num_workers": workers, "steps_per_epoch": args.steps_per_epoch,
                                 "gpu": gpu})

    @staticmethod
    def _worker_args(data: TrainingData, params: dict[str, Any], total: int, workers: int,
                     export_dir: str) -> WorkerArgs:
        if total == 0:
            raise ValueError("no training rows: the TensorFlow workers would wait for data forever")
        means, stds = feature_moments(data.train, data.features)
        seed, batch = int(params["seed"]), int(params["batch_size"])
        valid_x, valid_y = holdout_arrays(data, int(params["valid_max_rows"]), seed)
        head = heads.head(data.task, data.classes)
        return WorkerArgs(features=list(data.features), means=means, variances=[s * s for s in stds],
                          hidden=[int(h) for h in params["hidden"]], learning_rate=float(params["learning_rate"]),
                          batch_size=batch, epochs=int(params["epochs"]),
                          steps_per_epoch=max(1, math.floor(_FEED_SHARE * total / workers / batch)), seed=seed,
                          valid_x=valid_x, valid_y=valid_y, export_dir=export_dir, head=head,
                          target=heads.target_moments(data.train, data.label, data.task))

    def log_model(self, result: FitResult, name: str, *, signature: ModelSignature,
                  input_example: pd.DataFrame) -> ModelInfo:
        import mlflow.pyfunc

        features = [spec.name for spec in signature.inputs.inputs]
        trained: KerasModel = result.model
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, MODEL_FILE)
            trained.network.save(path)
            wrapper = _prediction_model_class()(features, trained.head)
            return mlflow.pyfunc.log_model(name=name, python_model=wrapper,
                                           artifacts={_KERAS_ARTIFACT: path}, signature=signature,
                                           input_example=input_example)


BACKEND = TFoSBackend()
