"""The ``torch`` backend: device pinning, input standardisation, the output heads per task, regression and
multiclass models trained by ``jobs/train.py --model`` from a model spec with TorchDistributor (scored on a
fresh sample against the naive baselines), and (slow) ``jobs/train.py --backend torch`` training a binary DDP
model on the shared local[2] session, logging per-epoch metrics and a pyfunc model that is registered as
@challenger and gated."""

from __future__ import annotations

import math

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
from lakeloop import tables
from lakeloop.train import gpu, heads, registry, spec, tasks
from lakeloop.train.base import check_backend
from lakeloop.train.prep import feature_moments
from lakeloop.train.torch import BACKEND, build_network
from lakeloop_apps.recommender.model import FEATURES, LABEL, split_holdout
from sklearn.metrics import roc_auc_score

from tests.test_models import DAY, _task_rows, _write_table, conf_with_models
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


def test_heads_turn_network_outputs_into_each_tasks_prediction():
    logits = np.array([[0.0, 2.0, -1.0], [3.0, 0.0, 0.0]])
    binary, regression, multiclass = heads.head("binary"), heads.head("regression"), heads.head("multiclass", 3)
    assert (binary.units, regression.units, multiclass.units) == (1, 1, 3)
    assert [h.loss for h in (binary, regression, multiclass)] == \
        ["binary_crossentropy", "mean_squared_error", "sparse_categorical_crossentropy"]
    np.testing.assert_allclose(heads.prediction(binary, logits[:, :1], logits=True), [0.5, 1 / (1 + np.exp(-3.0))])
    np.testing.assert_allclose(heads.prediction(regression, logits[:, :1], target=(10.0, 2.0)), [10.0, 16.0])
    probs = heads.prediction(multiclass, logits, logits=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert list(probs.argmax(axis=1)) == [1, 0]
    assert tasks.predictions("multiclass", probs, 2, 3).shape == (2, 3)
    assert heads.targets(multiclass, np.array([[2.0], [0.0]], dtype=np.float32)).tolist() == [2, 0]
    with pytest.raises(ValueError, match="at least 2 classes"):
        heads.head("multiclass", 1)


def test_regression_and_multiclass_networks():
    import torch

    x = torch.tensor([[12.0, float("nan")], [10.0, 3.0]])
    regression = build_network([10.0, -1.0], [2.0, 4.0], [3], heads.head("regression"), (100.0, 5.0))
    last = regression[-2]  # the linear unit, before the inverse standardisation of the target
    with torch.no_grad():
        assert torch.allclose(regression(x), last(regression[:-2](x)) * 5.0 + 100.0)
    assert build_network([10.0, -1.0], [2.0, 4.0], [3], heads.head("multiclass", 4))(x).shape == (2, 4)


def test_every_neural_backend_declares_its_tasks_and_refuses_the_others():
    assert set(check_backend("torch", "multiclass").tasks) == set(tasks.TASKS)
    assert set(check_backend("tfos", "regression").tasks) == set(tasks.TASKS)
    assert check_backend("bigdl", "regression").tasks == ("binary", "regression")
    with pytest.raises(ValueError, match=r"backend 'bigdl' does not train multiclass models \(it trains binary, "
                                         r"regression\)"):
        check_backend("bigdl", "multiclass")


def train_task_model(spark, root, backend: str, task: str, params: str):
    """``jobs/train.py --model TASK`` of a model spec training ``backend`` on the rows of
    :func:`tests.test_models._task_rows` (target ``3 x1 + 5 x2^2`` + noise, or 4 classes of ``x1 + x2``);
    returns the job's exit code and the model's conf."""
    from jobs.train import main

    metric = tasks.get_task(task).default_metric
    text = (f"mlflow_name: {backend}-{task}\ntable: gold.{task}_set\ntask: {task}\nlabel: target\nkeys: [id]\n"
            f"backend: {backend}\nparams: {params}\nsplit: {{kind: random}}\n"
            f"gate: {{metric: {metric}, resamples: 100}}\n")
    conf = conf_with_models(root, {task: text})
    _write_table(spark, conf, f"gold.{task}_set", _task_rows(task))
    sets = [f"warehouse={conf['warehouse']}", f"landing={conf['landing']}", f"train.models_dir={root / 'models'}"]
    code = main(["--date", DAY.isoformat(), "--model", task, *[a for s in sets for a in ("--set", s)]])
    return code, spec.model_conf(conf, task)


def check_task_model(conf, task: str, epochs: int, metric: str) -> None:
    """The @champion (promoted over the naive baselines) has per-epoch history, loads through pyfunc, predicts
    what :func:`lakeloop.train.tasks.predictions` accepts, and beats the naive prediction on fresh rows."""
    registry.setup(conf)
    champion = registry.version_for_alias(conf, registry.CHAMPION)
    assert champion is not None and champion.version == registry.version_for_alias(conf, registry.CHALLENGER).version
    steps = mlflow.MlflowClient().get_metric_history(champion.run_id, metric)
    assert [m.step for m in steps] == list(range(epochs)) and all(math.isfinite(m.value) for m in steps)
    fresh = _task_rows(task, n=600, seed=11)
    model = mlflow.pyfunc.load_model(registry.model_uri(conf["mlflow.model_name"], registry.CHAMPION))
    y = fresh["target"].to_numpy()
    if task == "regression":
        pred = tasks.predictions(task, model.predict(fresh[["x1", "x2"]]), len(fresh))
        assert np.sqrt(np.mean((pred - y) ** 2)) < 0.35 * y.std()  # a linear fit of x1 alone: 0.46
    else:
        probs = tasks.predictions(task, model.predict(fresh[["x1", "x2"]]), len(fresh), 4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        majority = np.bincount(y.astype(int)).max() / len(y)
        assert np.mean(probs.argmax(axis=1) == y) > majority + 0.2


@pytest.fixture(scope="module")
def torch_regression(spark, tmp_path_factory):
    return train_task_model(spark, tmp_path_factory.mktemp("torch-regression"), "torch", "regression",
                            "{epochs: 12, learning_rate: 0.01, num_workers: 1}")


@pytest.fixture(scope="module")
def torch_multiclass(spark, tmp_path_factory):
    return train_task_model(spark, tmp_path_factory.mktemp("torch-multiclass"), "torch", "multiclass",
                            "{epochs: 12, learning_rate: 0.01, num_workers: 1}")


def test_torch_trains_a_regression_model_that_beats_the_baselines(torch_regression):
    code, conf = torch_regression
    assert code == 0
    check_task_model(conf, "regression", 12, "validation-rmse")


def test_torch_trains_a_multiclass_model_that_beats_the_baselines(torch_multiclass):
    code, conf = torch_multiclass
    assert code == 0
    check_task_model(conf, "multiclass", 12, "validation-accuracy")


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
    registry.setup(conf)
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
