"""Model specs (conf/models/*.yaml): validation at start-up, selection, backends per task, splits, regression
and multiclass models trained, registered and gated, and infer refusing to publish too few rows."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pytest
from lakeloop.conf import ConfError, load_conf
from lakeloop.errors import DataQualityError
from lakeloop.infer import check_scoring_rows
from lakeloop.train import registry, spec, split
from lakeloop.train.base import Backend, check_backend, get_backend
from lakeloop.train.xgboost import XGBoostBackend

from tests.test_train import ROOT

DAY = dt.date(2026, 11, 10)


def conf_with_models(tmp_path, files: dict[str, str], *sets: str):
    """The project's conf with its own models/ folder holding ``files``."""
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    for name, text in files.items():
        (models / f"{name}.yaml").write_text(text)
    return load_conf("local", [f"warehouse={tmp_path / 'warehouse'}", f"landing={tmp_path / 'landing'}",
                               f"train.models_dir={models}", *sets], conf_dir=ROOT / "conf")


def test_the_recommender_spec_is_todays_model(conf):
    model = spec.model_conf(conf)
    assert model.model_name == "ranker" and model["mlflow.model_name"] == "lakeloop-ranker"
    assert (model["train.task"], model["train.backend"], model["train.split"], model["train.split_column"]) == \
        ("binary", "xgboost", "hash", "user_id")
    assert model["train.gate_metric"] == "auc" and model["train.gate_margin"] == 0.005
    assert set(model["train.baselines"]) == {"item_conversion", "item_popularity"}


def test_set_wins_over_the_spec(tmp_path):
    conf = conf_with_models(tmp_path, {"a": "task: regression\ngate: {metric: rmse, margin: 0.5}\n"},
                            "train.gate_margin=0.25")
    model = spec.model_conf(conf)
    assert model["train.task"] == "regression" and model["train.gate_margin"] == 0.25


@pytest.mark.parametrize("text, message", [
    ("tsk: binary\n", "a.yaml: unknown key 'tsk': expected one of mlflow_name, table, task"),
    ("task: ranking\n", "a.yaml: task (train.task): expected one of binary, regression, multiclass, got 'ranking'"),
    ("task: regression\n", "a.yaml: gate.metric: 'auc' is not a regression metric: expected one of rmse, mae, r2"),
    ("split: {kind: hash, column: null}\n", "a.yaml: split.column: the hash split needs a column"),
    ("split: {kind: time}\n", "a.yaml: time: the time split needs the label time column"),
    ("split: 0.2\n", "a.yaml: split: expected a mapping of kind, column, fraction, tolerance"),
    ("gate: {confidence: 1.5}\n", "a.yaml: gate.confidence: expected a number between 0 and 1"),
    ("task: multiclass\nbackend: bigdl\ngate: {metric: logloss}\n",
     "a.yaml: backend: backend 'bigdl' does not train multiclass models (it trains binary, regression)"),
    ("backend: nowhere.module:Thing\n", "backend 'nowhere.module:Thing': module nowhere.module not found"),
    ("gate: {baselines: {pop: {column: x, transform: log}}}\n",
     "gate.baselines.pop.transform: 'log': expected one of clip, max_scale"),
])
def test_spec_errors_name_file_key_and_allowed_values(tmp_path, text, message):
    conf = conf_with_models(tmp_path, {"a": text})
    with pytest.raises(ConfError) as err:
        spec.model_conf(conf)
    assert message in str(err.value)


def test_model_selection(tmp_path):
    conf = conf_with_models(tmp_path, {"a": "mlflow_name: m-a\n", "b": "mlflow_name: m-b\ntask: regression\n"
                                       "gate: {metric: mae}\n"})
    with pytest.raises(ConfError, match=r"declares several models \(a, b\): choose one with --model NAME"):
        spec.model_conf(conf)
    assert spec.model_conf(conf, "b")["mlflow.model_name"] == "m-b"
    assert spec.model_conf(conf, "a")["train.task"] == "binary"
    with pytest.raises(ConfError, match=r"model 'c': no .*c.yaml \(declared: a, b\)"):
        spec.model_conf(conf, "c")


class ThirdParty(XGBoostBackend):
    name = "third-party"
    tasks = ("regression",)


def test_backends_by_dotted_path_and_by_task():
    found = get_backend("tests.test_models:ThirdParty")
    assert isinstance(found, Backend) and found.name == "third-party"
    assert check_backend("tests.test_models:ThirdParty", "regression") is not None
    with pytest.raises(ValueError, match="does not train binary models"):
        check_backend("tests.test_models:ThirdParty", "binary")
    with pytest.raises(ValueError, match="DAY is not a lakeloop.train.base.Backend"):
        get_backend("tests.test_models:DAY")
    assert set(get_backend("xgboost").tasks) == {"binary", "regression", "multiclass"}


def test_split_miss_is_an_error_naming_the_cause(spark):
    rows = spark.createDataFrame(pd.DataFrame({"user_id": np.repeat([1, 2, 3], 30), "x": np.arange(90.0)}))
    results = [split.split(rows, "hash", 0.2, seed, "user_id")[2] for seed in range(12)]
    off = next(r for r in results if abs(r.realised - 0.2) > 0.1)
    with pytest.raises(DataQualityError, match=r"\d+% holdout for a 20% target \(tolerance 0.1\): only 3 distinct "
                                               r"user_id values"):
        split.check_split(off, 0.1)


def test_time_and_random_splits(spark):
    days = pd.date_range("2026-11-01", periods=10, freq="D", tz="UTC")
    rows = spark.createDataFrame(pd.DataFrame({"t": np.repeat(days, 20), "x": np.arange(200.0)}))
    train, holdout, result = split.split(rows, "time", 0.2, 7, "t", 0.05)
    assert result.realised == 0.2 and result.distinct == 10
    assert train.agg({"t": "max"}).first()[0] < holdout.agg({"t": "min"}).first()[0]
    _, _, rnd = split.split(rows, "random", 0.3, 7, None, 0.1)
    assert abs(rnd.realised - 0.3) <= 0.1 and rnd.train_rows + rnd.holdout_rows == 200


def test_too_few_scored_rows_is_a_data_quality_error():
    check_scoring_rows(5, 5, "gold.predictions dt=2026-11-10")
    with pytest.raises(DataQualityError, match="0 rows to score, fewer than the minimum 1") as err:
        check_scoring_rows(0, 0, "gold.predictions dt=2026-11-10")
    assert err.value.exit_code == 3
    with pytest.raises(DataQualityError, match="4 rows to score, fewer than the minimum 10"):
        check_scoring_rows(4, 10, "x")


def _write_table(spark, conf, name, frame):
    from lakeloop import tables

    tables.write(spark.createDataFrame(frame), conf.table_uri(name), mode="overwrite", partition_by=["dt"])


def _task_rows(task: str, n: int = 1200, seed: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2, noise = rng.normal(size=n), rng.uniform(size=n), rng.normal(size=n)
    if task == "regression":
        y = 3.0 * x1 + 5.0 * x2 ** 2 + 0.5 * noise
    else:
        y = np.digitize(x1 + x2 + 0.3 * noise, [-0.2, 0.6, 1.4])  # 4 classes
    return pd.DataFrame({"id": np.arange(n), "x1": x1, "x2": x2, "name": "a", "target": y, "dt": DAY.isoformat()})


@pytest.mark.slow
@pytest.mark.parametrize("task, metric", [("regression", "rmse"), ("multiclass", "logloss")])
def test_regression_and_multiclass_models_are_trained_registered_and_gated(spark, tmp_path, task, metric):
    import mlflow.pyfunc
    from lakeloop.train.run import train_for_date

    text = (f"mlflow_name: m-{task}-{uuid.uuid4().hex[:6]}\ntable: gold.{task}_set\ntask: {task}\nlabel: target\n"
            f"keys: [id]\nparams: {{n_estimators: 30, max_depth: 3}}\nsplit: {{kind: random}}\n"
            f"gate: {{metric: {metric}, resamples: 100}}\n")
    conf = conf_with_models(tmp_path, {task: text}, "spark.scheduler.mode=FIFO")
    _write_table(spark, conf, f"gold.{task}_set", _task_rows(task))
    outcome = train_for_date(spark, conf, DAY)
    gate = outcome.report["gate"]
    assert outcome.decision.passed, outcome.decision.reasons
    assert outcome.report["features"] == ["x1", "x2"] and outcome.report["task"] == task
    assert gate["reference"].startswith("baseline ") and gate["lower_bound"] >= gate["margin"]
    expected = {"regression": {"mean", "feature:x1", "feature:x2"}, "multiclass": {"majority", "class_frequencies"}}
    assert set(gate["baselines"]) == expected[task]
    model_conf = spec.model_conf(conf)
    assert registry.alias_version(model_conf, registry.CHAMPION) == outcome.model_version
    model = mlflow.pyfunc.load_model(registry.model_uri(model_conf["mlflow.model_name"], registry.CHAMPION))
    out = np.asarray(model.predict(pd.DataFrame({"x1": [0.0, 2.0], "x2": [0.5, 0.5]})))
    if task == "regression":
        assert out.shape == (2,) and out[1] > out[0] + 3
    else:
        assert outcome.report["classes"] == 4 and out.shape == (2, 4)
        assert np.allclose(out.sum(axis=1), 1.0) and out[1].argmax() > out[0].argmax()
    assert 0.1 <= outcome.report["split"]["realised"] <= 0.3
