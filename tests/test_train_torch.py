"""The ``torch`` backend: device pinning, input standardisation, and (slow) ``jobs/train.py
--backend torch`` training a DDP model with TorchDistributor on the shared local[2] session,
logging per-epoch metrics and a pyfunc model that is registered as @challenger and gated."""

from __future__ import annotations

import math

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
from lakeloop import tables
from lakeloop.train import gpu, registry
from lakeloop.train.prep import feature_moments
from lakeloop.train.torch import BACKEND, build_network
from lakeloop_apps.recommender.model import FEATURES, LABEL, split_holdout
from sklearn.metrics import roc_auc_score

from tests.test_train import RUN_DATE, training_frame, training_pandas


def test_device_params_pin_the_scheduled_gpu():
    assert BACKEND.device_params(gpu.torch_device(["3"])) == {"device": "cuda:3"}
    assert BACKEND.device_params(gpu.torch_device([])) == {"device": "cpu"}


def test_feature_moments_ignore_missing_values(spark):
    df = spark.createDataFrame([(1.0, 5.0, float("nan")), (3.0, 5.0, None), (float("nan"), 5.0, None)],
                               "a double, b double, c double")
    means, stds = feature_moments(df, ["a", "b", "c"])
    assert means == [2.0, 5.0, 0.0]
    assert stds == [1.0, 1.0, 1.0]  # a: population std of (1, 3); b constant; c all missing


def test_network_standardises_and_imputes_missing_values_with_the_mean():
    import torch

    net = build_network([10.0, -1.0], [2.0, 4.0], [3])
    standardise = net[0]
    x = torch.tensor([[12.0, float("nan")], [10.0, 3.0]])
    assert torch.equal(standardise(x), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.isfinite(net(x)).all()


def write_gold(spark, conf) -> None:
    """``gold.training_set`` for RUN_DATE from the shared synthetic training frame."""
    tables.write(training_frame(spark, RUN_DATE), conf.table_uri("gold.training_set"), mode="overwrite",
                 partition_by=["dt"])


def run_train_job(spark, conf, backend: str, *overrides: str):
    """Run ``jobs/train.py --backend BACKEND`` for RUN_DATE on ``conf``'s warehouse; returns its exit code."""
    from jobs.train import main

    write_gold(spark, conf)
    sets = [f"warehouse={conf['warehouse']}", f"landing={conf['landing']}", *overrides]
    return main(["--date", RUN_DATE.isoformat(), "--backend", backend, *[a for s in sets for a in ("--set", s)]])


def check_registered_model(spark, conf, backend: str, epochs: int, metrics: list[str]) -> None:
    """The @challenger version comes from a ``backend`` run with per-epoch metrics and scores the holdout."""
    registry.setup(conf)
    challenger = registry.version_for_alias(conf, registry.CHALLENGER)
    assert challenger is not None
    assert challenger.tags["backend"] == backend
    champion = registry.version_for_alias(conf, registry.CHAMPION)
    assert champion is not None and champion.version == challenger.version  # first model passed the gate
    client = mlflow.MlflowClient()
    for name in metrics:
        steps = client.get_metric_history(challenger.run_id, name)
        assert [m.step for m in steps] == list(range(epochs)), name
        assert all(math.isfinite(m.value) for m in steps), name
    rows = training_pandas(RUN_DATE)
    _, holdout = split_holdout(spark.createDataFrame(rows), conf["train.holdout_fraction"], conf["train.seed"])
    holdout = holdout.toPandas()
    holdout[FEATURES] = holdout[FEATURES].astype("float64")
    model = mlflow.pyfunc.load_model(registry.model_uri(conf["mlflow.model_name"], registry.CHALLENGER))
    scores = np.asarray(model.predict(holdout[FEATURES]), dtype=float).reshape(-1)
    assert scores.shape == (len(holdout),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(holdout[LABEL], scores) > 0.6


@pytest.mark.slow
def test_train_job_trains_with_torch_distributor_and_registers_challenger(spark, conf):
    assert run_train_job(spark, conf, "torch", "train.num_workers=2", "train.params={epochs: 2}") == 0
    check_registered_model(spark, conf, "torch", 2, ["training-loss", "validation-loss", "validation-auc"])
    run = mlflow.get_run(registry.version_for_alias(conf, registry.CHALLENGER).run_id)
    assert run.data.params["param.num_workers"] == "2"
    assert run.data.params["param.rank0_device"] == "cpu"
