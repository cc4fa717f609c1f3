"""The ``bigdl`` backend: a BigDL DLlib Keras-style MLP trained in the cluster with NNFrames.

**Legacy and runtime.**  BigDL DLlib 2.4.0 (the last release; archived upstream) ships a Scala 2.12 jar
only, which cannot load in Spark 4 (Scala 2.13).  This backend therefore runs in the Spark 3.5 side
runtime (``.venv-spark35``, ``./setup.sh spark35``); ``spark-submit.sh`` routes ``train --backend bigdl``
there by itself (:mod:`lakeloop.runtime`).  See docs/bigdl.md.

Tasks: ``binary`` and ``regression`` (:mod:`lakeloop.train.heads`).  Training: the features are
standardised in Spark (training means / standard deviations; missing values become the mean) into
an ``array<float>`` column, and a ``Sequential`` of ``Dense`` layers (``hidden`` ReLU layers, then
one sigmoid unit for binary, one linear unit for regression) is fitted with
:class:`bigdl.dllib.nnframes.NNEstimator` on the training frame (Adam; binary cross-entropy, or
mean squared error on the target standardised in Spark with its training mean / standard
deviation, which the logged model undoes): BigDL's distributed optimizer runs one model replica per
executor core and synchronises the gradients every batch.  The holdout (at most
``valid_max_rows`` rows, seeded sample) is evaluated by BigDL after every epoch, so ``history``
holds ``training-loss`` (mean over the epoch's batches) and ``validation-loss`` per epoch (for
regression in units of the standardised target).
BigDL needs a global batch size that the cores divide: ``batch_size`` is rounded up to a multiple
of them (the effective value is logged as ``param.batch_size``).

The logged model is the ``bigdl`` flavour of :mod:`lakeloop.train.bigdl_flavor`: BigDL's own format
plus a pyfunc that scores it anywhere.  BigDL trains on CPU only; ``gpu=True`` is refused.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.train import heads
from lakeloop.train.base import Backend, FitResult, TrainingData
from lakeloop.train.prep import feature_moments, standardized_features

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf

__all__ = ["BigDLBackend", "BACKEND", "TrainedNetwork", "init_bigdl", "build_network", "model_input",
           "epoch_means", "score_frame"]

FEATURES_COL = "features"
LABEL_COL = "label"
_LOSS = "Loss"
# the BigDL criterion of each head loss (lakeloop.train.heads) this backend trains
_CRITERIA = {"binary_crossentropy": "BCECriterion", "mean_squared_error": "MSECriterion"}


@dataclass
class TrainedNetwork:
    """What :meth:`BigDLBackend.fit` returns as ``FitResult.model``: the BigDL network, its inputs'
    standardisation (``model_input``) and its head with the target's standardisation (``target``: mean and
    standard deviation of a regression target), which the logged model needs too."""

    network: Any
    means: list[float]
    stds: list[float]
    activations: list[str]
    head: heads.Head = heads.Head("binary", 1)
    target: tuple[float, float] = (0.0, 1.0)


def init_bigdl(spark: SparkSession) -> Any:
    """Initialise BigDL's engine on the running SparkContext (jars from spark-submit or the session).

    ``KMP_SETTINGS=0`` keeps Intel OpenMP from printing its settings page; BigDL's Spark log
    redirection (``./bigdl.log``) is off.  Raises RuntimeError with the fix when BigDL or its jars
    are missing (Spark 4, or a session started without the jars).
    """
    os.environ.setdefault("KMP_SETTINGS", "0")
    try:
        from bigdl.dllib.nncontext import init_nncontext
    except ImportError:
        raise RuntimeError("backend bigdl needs BigDL DLlib, installed only in the Spark 3.5 runtime: "
                           "run ./setup.sh spark35 and ./spark-submit.sh train --backend bigdl") from None
    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName("com.intel.analytics.bigdl.dllib.utils.Engine", False,
                                    jvm.java.lang.Thread.currentThread().getContextClassLoader())
    except Exception:
        raise RuntimeError("BigDL's jars are not on the Spark classpath: start the job with ./spark-submit.sh "
                           "(it adds them), or see lakeloop.runtime.bigdl_properties") from None
    return init_nncontext(cluster_mode="spark-submit", redirect_spark_log=False,
                          spark_log_level=spark.sparkContext.getConf().get("spark.log.level", "WARN"))


def _total_cores() -> int:
    """Nodes x cores of BigDL's engine (after :func:`init_bigdl`): what a global batch must be a multiple of."""
    from bigdl.dllib.utils.common import get_node_and_core_number

    nodes, cores = get_node_and_core_number()
    return max(1, int(nodes) * int(cores))


def build_network(inputs: int, hidden: list[int], seed: int, head: heads.Head | None = None) -> Any:
    """A BigDL Keras-style ``Sequential``: ReLU ``Dense`` layers of ``hidden`` units, the head's output layer
    (default: one sigmoid unit)."""
    from bigdl.dllib.keras.layers import Dense
    from bigdl.dllib.keras.models import Sequential
    from bigdl.dllib.utils.common import callBigDlFunc

    callBigDlFunc("float", "setModelSeed", seed)
    model = Sequential()
    width = inputs
    for units in hidden:
        model.add(Dense(units, activation="relu", input_shape=(width,)))
        width = units
    head = head or heads.head("binary")
    activation = None if head.activation == "linear" else head.activation
    model.add(Dense(head.units, activation=activation, input_shape=(width,)))
    return model


def model_input(df: DataFrame, features: list[str], label: str | None, means: list[float],
                stds: list[float], target: tuple[float, float] = (0.0, 1.0)) -> DataFrame:
    """``features`` (standardised ``array<float>``) and, given ``label``, ``label`` as ``array<float>``,
    standardised with ``target`` (mean, standard deviation; the default leaves it as it is)."""
    from pyspark.sql import functions as F

    cols = [standardized_features(features, means, stds).alias(FEATURES_COL)]
    if label is not None:
        y = F.col(label).cast("double")
        if tuple(target) != (0.0, 1.0):
            y = (y - F.lit(target[0])) / F.lit(target[1])
        cols.append(F.array(y.cast("float")).alias(LABEL_COL))
    return df.select(*cols)


def epoch_means(records: list[list[float]], epoch_ends: list[int]) -> list[float]:
    """Mean value per epoch of BigDL summary ``records`` ``[iteration, value, time]``.

    ``epoch_ends`` are the last iteration of every epoch (the validation summary's steps).
    """
    means: list[float] = []
    start = 0
    for end in epoch_ends:
        values = [r[1] for r in records if start < r[0] <= end]
        if values:
            means.append(sum(values) / len(values))
        start = end
    return means


def _holdout(data: TrainingData, max_rows: int, seed: int) -> DataFrame:
    total = data.valid.count()
    if total == 0:
        raise ValueError("the holdout is empty: per-epoch validation needs rows")
    if total > max_rows:
        return data.valid.sample(fraction=min(1.0, 1.1 * max_rows / total), seed=seed).limit(max_rows)
    return data.valid


class BigDLBackend(Backend):
    """A BigDL Keras-style MLP trained with NNFrames' NNEstimator (Spark 3.5 runtime)."""

    name = "bigdl"
    tasks = ("binary", "regression")

    def default_params(self, conf: Conf) -> dict[str, Any]:
        return {"hidden": [32, 16], "learning_rate": 0.003, "batch_size": 256, "epochs": 5,
                "valid_max_rows": 20000, "seed": conf["train.seed"]}

    def device_params(self, device: str) -> dict[str, Any]:
        if device != "cpu":
            raise ValueError(f"backend bigdl trains on CPU only (Intel MKL), not on {device}")
        return {}

    def fit(self, spark: SparkSession, data: TrainingData, params: dict[str, Any], *,
            gpu: bool = False) -> FitResult:
        from bigdl.dllib.nn import criterion
        from bigdl.dllib.nnframes import NNEstimator
        from bigdl.dllib.optim.optimizer import Adam, EveryEpoch, Loss, TrainSummary, ValidationSummary

        if gpu:
            raise ValueError("backend bigdl trains on CPU only: set gpu.enabled=false")
        init_bigdl(spark)
        seed, features = int(params["seed"]), list(data.features)
        cores = _total_cores()
        batch = -(-int(params["batch_size"]) // cores) * cores
        hidden = [int(h) for h in params["hidden"]]
        head = heads.head(data.task, data.classes)
        loss = getattr(criterion, _CRITERIA[head.loss])
        target = heads.target_moments(data.train, data.label, data.task)
        means, stds = feature_moments(data.train, features)
        train = model_input(data.train, features, data.label, means, stds, target)
        valid = model_input(_holdout(data, int(params["valid_max_rows"]), seed), features, data.label, means, stds,
                            target)
        model = build_network(len(features), hidden, seed, head)
        estimator = (NNEstimator(model, loss(), [len(features)], [1])
                     .setBatchSize(batch).setMaxEpoch(int(params["epochs"]))
                     .setOptimMethod(Adam(learningrate=float(params["learning_rate"]))))
        with tempfile.TemporaryDirectory(prefix="lakeloop-bigdl-") as logdir:
            train_log, valid_log = TrainSummary(logdir, "train"), ValidationSummary(logdir, "train")
            estimator.setTrainSummary(train_log).setValidationSummary(valid_log)
            estimator.setValidation(EveryEpoch(), valid, [Loss(loss())], batch)
            estimator.fit(train)
            valid_loss = [list(r) for r in valid_log.read_scalar(_LOSS)]
            train_loss = [list(r) for r in train_log.read_scalar(_LOSS)]
        ends = [int(r[0]) for r in valid_loss]
        history = {"training-loss": epoch_means(train_loss, ends), "validation-loss": [r[1] for r in valid_loss]}
        trained = TrainedNetwork(model, means, stds, ["relu"] * len(hidden) + [head.activation], head, target)
        return FitResult(model=trained, history=history,
                         params={**params, "batch_size": batch, "hidden": hidden, "cores": cores})

    def log_model(self, result: FitResult, name: str, *, signature: ModelSignature,
                  input_example: pd.DataFrame) -> ModelInfo:
        from mlflow.models import Model

        from lakeloop.train import bigdl_flavor

        trained: TrainedNetwork = result.model
        features = [spec.name for spec in signature.inputs.inputs]
        return Model.log(None, bigdl_flavor, name=name, bigdl_model=trained.network, features=features,
                         means=trained.means, stds=trained.stds, activations=trained.activations,
                         task=trained.head.task, target=list(trained.target), signature=signature,
                         input_example=input_example)


BACKEND = BigDLBackend()


def score_frame(df: DataFrame, model_dir: str, features: list[str], keep: list[str], score: str) -> DataFrame:
    """Bulk scoring with BigDL in the cluster: ``keep`` columns of ``df`` plus ``score``.

    ``model_dir`` is a local copy of a logged ``bigdl`` model; its network is loaded on the driver and
    applied by :class:`bigdl.dllib.nnframes.NNModel` (broadcast to the executors) to the features
    standardised exactly as in training; ``score`` is the network's output unit (a regression model's
    de-standardised, as its pyfunc does).
    """
    import json
    from pathlib import Path

    from bigdl.dllib.nnframes import NNModel
    from pyspark.sql import functions as F

    from lakeloop.train import bigdl_flavor

    init_bigdl(df.sparkSession)
    spec = json.loads((Path(model_dir) / bigdl_flavor.NETWORK_DIR / "network.json").read_text())
    if spec["features"] != list(features):
        raise ValueError(f"the BigDL model expects features {spec['features']}, the scoring frame has {features}")
    network = bigdl_flavor.load_bigdl(model_dir)
    frame = df.select(*keep, standardized_features(features, spec["means"], spec["stds"]).alias(FEATURES_COL))
    scored = NNModel(network, [len(features)]).setPredictionCol("_prediction").transform(frame)
    mean, std = spec.get("target", (0.0, 1.0))
    value = F.col("_prediction")[0].cast("double")
    if spec.get("task", "binary") == "regression":
        value = value * F.lit(float(std)) + F.lit(float(mean))
    return scored.select(*keep, value.alias(score))
