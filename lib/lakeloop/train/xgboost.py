"""The default backend: ``xgboost.spark.SparkXGBClassifier`` (binary, multiclass) or
``SparkXGBRegressor`` (regression) trained in the cluster.

``train.num_workers`` Spark barrier tasks train one booster together (Rabit).  The holdout rides
along as the estimator's validation set (``validation_indicator_col``), so the per-round
``training-*`` and ``validation-*`` metrics come back in the model's training summary.  The logged
MLflow model is the underlying ``xgboost.Booster`` (``mlflow.xgboost`` flavor), whose pyfunc
``predict`` returns the positive-class probability: the Spark wrapper is never logged.

GPU: with ``gpu=True`` the estimator gets ``device="cuda"`` and xgboost.spark itself pins each
barrier task to ``TaskContext.resources()["gpu"].addresses[0]`` (see docs/gpu.md).  Tuning trials
(:meth:`XGBoostBackend.fit_local`) pin the device from :func:`lakeloop.train.gpu.task_device`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakeloop.train.base import Backend, FitResult, TrainingData

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf

__all__ = ["XGBoostBackend", "BACKEND"]

_VALID_COL = "_is_holdout"
# xgboost.spark reads each partition as Arrow batches; with features_col given as a column list it fails
# (KeyError 'values') on a batch without holdout rows, which any partition larger than one batch can have
# (train rows come before holdout rows).  The fit reads one batch per partition (0: no row limit).
_ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"
# estimator-only keys that are not booster parameters of xgboost.train
_ROUNDS = "n_estimators"
# per task: booster objective of the single-node trials, per-round metrics
_OBJECTIVE = {"binary": "binary:logistic", "regression": "reg:squarederror", "multiclass": "multi:softprob"}
_EVAL_METRIC = {"binary": ["logloss", "auc"], "regression": ["rmse", "mae"], "multiclass": ["mlogloss", "merror"]}


class XGBoostBackend(Backend):
    """Gradient-boosted trees with xgboost.spark (in-cluster) and xgboost.train (tuning trials)."""

    name = "xgboost"
    supports_local_fit = True
    tasks = ("binary", "regression", "multiclass")

    def default_params(self, conf: Conf) -> dict[str, Any]:
        return {"n_estimators": 100, "max_depth": 6, "learning_rate": 0.1, "min_child_weight": 1,
                "subsample": 1.0, "eval_metric": list(_EVAL_METRIC[conf["train.task"]]),
                "random_state": conf["train.seed"], "num_workers": conf["train.num_workers"]}

    def device_params(self, device: str) -> dict[str, Any]:
        return {"device": device}

    def fit(self, spark: SparkSession, data: TrainingData, params: dict[str, Any], *,
            gpu: bool = False) -> FitResult:
        from pyspark.sql import functions as F
        from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

        from lakeloop.session import is_verbose

        params = dict(params)
        num_workers = int(params.pop("num_workers", 1))
        rows = (data.train.withColumn(_VALID_COL, F.lit(False))
                .unionByName(data.valid.withColumn(_VALID_COL, F.lit(True)))
                .select(*data.features, data.label, _VALID_COL))
        # device="cuda" (not cuda:N): xgboost.spark resolves each barrier task's own GPU ordinal.
        # force_repartition: the union of train and holdout may already have num_workers partitions,
        # and a barrier stage over a union of differently partitioned inputs is refused by Spark.
        kind = SparkXGBRegressor if data.task == "regression" else SparkXGBClassifier
        estimator = kind(features_col=list(data.features), label_col=data.label,
                                       validation_indicator_col=_VALID_COL, num_workers=num_workers,
                                       force_repartition=True, device="cuda" if gpu else "cpu",
                                       verbose=is_verbose(), **params)
        previous = spark.conf.get(_ARROW_BATCH)
        spark.conf.set(_ARROW_BATCH, "0")
        try:
            model = estimator.fit(rows)
        finally:
            spark.conf.set(_ARROW_BATCH, previous)
        summary = model.training_summary
        history = {f"training-{k}": list(v) for k, v in summary.train_objective_history.items()}
        history.update({f"validation-{k}": list(v) for k, v in summary.validation_objective_history.items()})
        booster = model.get_booster()
        booster.feature_names = list(data.features)
        return FitResult(model=booster, history=history, params={**params, "num_workers": num_workers},
                         feature_importance=_importance(booster))

    def log_model(self, result: FitResult, name: str, *, signature: ModelSignature,
                  input_example: pd.DataFrame) -> ModelInfo:
        import mlflow.xgboost

        # pinned explicitly: MLflow's inference of requirements loads the model in a subprocess
        return mlflow.xgboost.log_model(result.model, name=name, signature=signature,
                                        input_example=input_example, model_format="ubj",
                                        pip_requirements=_requirements("xgboost", "numpy", "pandas"))

    def fit_local(self, train: pd.DataFrame, valid: pd.DataFrame, features: list[str], label: str,
                  params: dict[str, Any], *, device: str = "cpu", task: str = "binary",
                  classes: int = 0) -> FitResult:
        import xgboost as xgb

        booster_params = {k: v for k, v in params.items() if k not in (_ROUNDS, "num_workers")}
        booster_params["seed"] = booster_params.pop("random_state", 0)
        booster_params.update(self.device_params(device))
        booster_params.setdefault("nthread", 1)
        booster_params["objective"] = _OBJECTIVE[task]
        if task == "multiclass":
            booster_params["num_class"] = classes
        dtrain = xgb.DMatrix(train[features], label=train[label], feature_names=features)
        dvalid = xgb.DMatrix(valid[features], label=valid[label], feature_names=features)
        evals: dict[str, dict[str, list[float]]] = {}
        booster = xgb.train(booster_params, dtrain, num_boost_round=int(params.get(_ROUNDS, 100)),
                            evals=[(dtrain, "training"), (dvalid, "validation")], evals_result=evals,
                            verbose_eval=False)
        history = {f"{side}-{metric}": [float(x) for x in values]
                   for side, metrics in evals.items() for metric, values in metrics.items()}
        return FitResult(model=booster, history=history, params={**params, **self.device_params(device)},
                         feature_importance=_importance(booster))

    def predict_local(self, model: Any, frame: pd.DataFrame) -> Any:
        import xgboost as xgb

        return model.predict(xgb.DMatrix(frame[model.feature_names], feature_names=model.feature_names))


def _requirements(*packages: str) -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in packages]


def _importance(booster: Any) -> dict[str, float]:
    """Total gain per feature (features never split on are absent)."""
    return {k: float(v) for k, v in booster.get_score(importance_type="total_gain").items()}


BACKEND = XGBoostBackend()
