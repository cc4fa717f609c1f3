"""The ``bigdl`` backend end to end in the Spark 3.5 runtime: ``jobs/train.py --backend bigdl`` trains a
BigDL Keras-style MLP with NNFrames on the shared local[2] session, logs it to MLflow (BigDL's format plus a
pyfunc), registers it, and the gate promotes it over the naive baselines; bulk inference scores a batch
with BigDL and gives the pyfunc's probabilities.  A regression model trained from a model spec beats the
naive prediction on a fresh sample, and BigDL's bulk scoring of it gives the pyfunc's values.

Run with ``.venv-spark35/bin/python -m pytest -m bigdl`` (``./setup.sh spark35`` builds the runtime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bigdl.dllib", reason="BigDL is installed in the Spark 3.5 runtime only: "
                                          ".venv-spark35/bin/python -m pytest -m bigdl")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
from lakeloop import infer  # noqa: E402
from lakeloop.conf import load_conf  # noqa: E402
from lakeloop.runtime import needs_spark35  # noqa: E402
from lakeloop.train import bigdl_flavor, registry  # noqa: E402
from lakeloop_apps.recommender.model import FEATURES, LABEL, split_holdout  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from tests.conftest import ROOT  # noqa: E402
from tests.test_models import _task_rows  # noqa: E402
from tests.test_train import RUN_DATE, training_pandas  # noqa: E402
from tests.test_train_torch import (  # noqa: E402
    check_registered_model,
    check_task_model,
    run_train_job,
    train_task_model,
)

pytestmark = [pytest.mark.bigdl, pytest.mark.slow]
EPOCHS = 3


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """A bigdl model trained by the train job on a fresh warehouse; returns the conf."""
    root = tmp_path_factory.mktemp("bigdl")
    conf = load_conf("local", [f"warehouse={root / 'warehouse'}", f"landing={root / 'landing'}"],
                     conf_dir=ROOT / "conf")
    assert run_train_job(spark, conf, "bigdl", f"train.params={{epochs: {EPOCHS}}}") == 0
    return conf


def holdout_pandas(spark, conf):
    rows = training_pandas(RUN_DATE)
    _, holdout = split_holdout(spark.createDataFrame(rows), conf["train.holdout_fraction"], conf["train.seed"])
    frame = holdout.toPandas()
    frame[FEATURES] = frame[FEATURES].astype("float64")
    return frame


def test_bigdl_model_is_logged_registered_and_beats_the_baseline(spark, trained):
    conf = trained
    check_registered_model(spark, conf, "bigdl", EPOCHS, ["training-loss", "validation-loss"])
    champion = registry.version_for_alias(conf, registry.CHAMPION)
    run = mlflow.get_run(champion.run_id)
    assert run.data.tags["gate.decision"] == "promoted"
    baselines = [v for k, v in run.data.metrics.items() if k.startswith("gate.baseline.")]
    assert baselines and run.data.metrics["gate.challenger_value"] > max(baselines)
    assert int(run.data.params["param.batch_size"]) % int(run.data.params["param.cores"]) == 0
    losses = mlflow.MlflowClient().get_metric_history(champion.run_id, "training-loss")
    assert losses[-1].value < losses[0].value  # it learned
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{conf['mlflow.model_name']}/{champion.version}"))
    info = mlflow.models.get_model_info(str(model_dir))
    assert {"bigdl", "python_function"} <= set(info.flavors)
    assert (model_dir / bigdl_flavor.BIGDL_FILE).is_file()
    assert info.flavors["python_function"]["loader_module"] == "lakeloop.train.bigdl_flavor"


def test_bulk_scoring_with_bigdl_matches_the_pyfunc(spark, trained):
    conf = trained
    ref = infer.resolve_model(conf)
    assert "bigdl" in ref.flavors
    assert needs_spark35(conf, "infer", [])  # spark-submit.sh sends infer of this champion to Spark 3.5
    holdout = holdout_pandas(spark, conf)
    frame = spark.createDataFrame(holdout[["user_id", "item_id", *FEATURES]]).repartition(3)
    loads = spark.sparkContext.accumulator(0)
    scored = infer.score(frame, ref, FEATURES, ["user_id", "item_id"], loads=loads).toPandas()
    assert list(scored.columns) == ["user_id", "item_id", "score"] and len(scored) == len(holdout)
    assert loads.value == 1
    merged = holdout.merge(scored, on=["user_id", "item_id"], validate="one_to_one")
    pyfunc = mlflow.pyfunc.load_model(registry.model_uri(conf["mlflow.model_name"], registry.CHAMPION))
    expected = np.asarray(pyfunc.predict(merged[FEATURES]), dtype=float)
    np.testing.assert_allclose(merged["score"].to_numpy(), expected, atol=1e-5)
    assert roc_auc_score(merged[LABEL], merged["score"]) > 0.6


@pytest.fixture(scope="module")
def regression(spark, tmp_path_factory):
    """A bigdl regression model trained by the train job from a model spec; returns the exit code and conf."""
    return train_task_model(spark, tmp_path_factory.mktemp("bigdl-regression"), "bigdl", "regression",
                            f"{{epochs: {EPOCHS * 4}, learning_rate: 0.01, batch_size: 64}}")


def test_bigdl_regression_model_beats_the_baselines_and_bulk_scoring_gives_its_values(spark, regression):
    code, conf = regression
    assert code == 0
    check_task_model(conf, "regression", EPOCHS * 4, "validation-loss")
    fresh = _task_rows("regression", n=300, seed=12)
    ref = infer.resolve_model(conf)
    frame = spark.createDataFrame(fresh[["id", "x1", "x2"]]).repartition(2)
    scored = infer.score(frame, ref, ["x1", "x2"], ["id"], task="regression").toPandas().sort_values("id")
    pyfunc = mlflow.pyfunc.load_model(registry.model_uri(conf["mlflow.model_name"], registry.CHAMPION))
    np.testing.assert_allclose(scored["score"].to_numpy(), pyfunc.predict(fresh[["x1", "x2"]]), rtol=1e-5, atol=1e-4)
