"""Training end to end on a small gold training set with a known signal: MLflow run contents,
registry aliases, the evaluation gate (baseline, worse, better, broken models) and tuning."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from lakeloop import tables
from lakeloop.errors import EXIT_GATE_REFUSED, DataQualityError
from lakeloop.train import registry
from lakeloop.train.dataset import load_model_data
from lakeloop_apps.recommender import model as train_data
from pyspark.sql import functions as F

RUN_DATE = dt.date(2026, 11, 10)


def training_pandas(day: dt.date, users: int = 300, per_user: int = 8, seed: int = 3) -> pd.DataFrame:
    """``gold.training_set``-shaped rows whose label depends on the features (with noise)."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    user_item_events = rng.poisson(1.0, n).astype("int64")
    affinity = rng.exponential(1.0, n)
    price = rng.uniform(1, 100, n)
    ctr = rng.beta(2, 8, n)
    views = rng.poisson(50, n).astype("int64")
    logit = -2.0 + 1.2 * np.minimum(user_item_events, 3) + 0.8 * affinity - 0.02 * price \
        + 2.0 * ((affinity > 1.0) & (price < 40)) + 3.0 * ctr
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype("int32")
    clicks = np.round(views * ctr).astype("int64")
    purchases = rng.binomial(clicks, 0.1).astype("int64")
    ts = pd.Timestamp(day, tz="UTC")
    frame = pd.DataFrame({
        "user_id": np.repeat(np.arange(users, dtype="int64"), per_user),
        "item_id": rng.integers(0, 500, n).astype("int64") * 1000 + np.arange(n) % 1000,
        "label": label, "label_ts": ts, "category": rng.choice(["toys", "books", "garden"], n),
        "item_price": price, "user_events": rng.poisson(20, n).astype("int64"),
        "user_purchases": rng.poisson(2, n).astype("int64"),
        "seconds_since_user_event": np.where(rng.uniform(size=n) < 0.1, np.nan, rng.exponential(3600, n)),
        "user_category_affinity": affinity, "user_category_events": rng.poisson(5, n).astype("int64"),
        "user_item_events": user_item_events, "user_item_purchases": rng.binomial(user_item_events, 0.2),
        "seconds_since_user_item": np.where(user_item_events > 0, rng.exponential(7200, n), np.nan),
        "item_views": views, "item_clicks": clicks, "item_purchases": purchases,
        "item_ratings": rng.poisson(3, n).astype("int64"), "item_mean_rating": rng.uniform(1, 5, n),
        "item_ctr": ctr, "item_conversion": purchases / np.maximum(views, 1), "dt": day.isoformat(),
    })
    frame["user_item_purchases"] = frame["user_item_purchases"].astype("int64")
    return frame


def training_frame(spark, day: dt.date, **kw):
    return spark.createDataFrame(training_pandas(day, **kw))


# ---------------------------------------------------------------------------------------------------
# data loading and the holdout split (shared Spark session)

ROOT = Path(__file__).resolve().parents[1]


def write_gold(spark, conf, frame, day=RUN_DATE):
    tables.write(frame, conf.table_uri("gold.training_set"), mode="overwrite", partition_by=["dt"],
                 replace_where=f"dt = '{day.isoformat()}'")


def test_holdout_split_is_by_user_seeded_and_stable(spark):
    frame = training_frame(spark, RUN_DATE, users=200, per_user=5)
    train, holdout = train_data.split_holdout(frame, 0.25, seed=7)
    train_users = {r.user_id for r in train.select("user_id").distinct().collect()}
    held_users = {r.user_id for r in holdout.select("user_id").distinct().collect()}
    assert not train_users & held_users and len(train_users | held_users) == 200
    assert 0.15 < len(held_users) / 200 < 0.35
    again = {r.user_id for r in train_data.split_holdout(frame, 0.25, seed=7)[1].select("user_id").collect()}
    assert again == held_users
    other = {r.user_id for r in train_data.split_holdout(frame, 0.25, seed=8)[1].select("user_id").collect()}
    assert other != held_users
    with pytest.raises(ValueError, match="holdout fraction"):
        train_data.split_holdout(frame, 1.0, seed=7)


def test_shuffle_labels_permutes_labels_only(spark):
    frame = training_frame(spark, RUN_DATE, users=60, per_user=5)
    shuffled = train_data.shuffle_labels(frame, seed=3)
    before = {(r.user_id, r.item_id): r for r in frame.collect()}
    after = {(r.user_id, r.item_id): r for r in shuffled.collect()}
    assert before.keys() == after.keys() and shuffled.columns == frame.columns
    assert sum(r.label for r in before.values()) == sum(r.label for r in after.values())
    assert any(before[k].label != after[k].label for k in before)
    assert all(before[k].item_ctr == after[k].item_ctr for k in before)


@pytest.mark.slow
def test_load_model_data_reads_date_and_records_version(spark, conf):
    write_gold(spark, conf, training_frame(spark, RUN_DATE, users=80, per_user=5))
    write_gold(spark, conf, training_frame(spark, RUN_DATE - dt.timedelta(days=1), users=80, per_user=5, seed=4),
               RUN_DATE - dt.timedelta(days=1))
    loaded = load_model_data(spark, conf, RUN_DATE)
    assert loaded.input_versions == {"gold.training_set": 1}
    assert loaded.features == train_data.FEATURES
    assert loaded.train.count() + loaded.valid.count() == 400  # only dt = RUN_DATE (train.days = 1)
    assert dict(loaded.train.dtypes)["user_events"] == "double"
    two = load_model_data(spark, conf.with_overrides({"train.days": 2}), RUN_DATE)
    assert two.train.count() + two.valid.count() == 800


def test_load_model_data_rejects_bad_input(spark, conf):
    with pytest.raises(DataQualityError, match="no table"):
        load_model_data(spark, conf, RUN_DATE)
    bad = training_frame(spark, RUN_DATE, users=20, per_user=5).withColumn("label", F.lit(2))
    write_gold(spark, conf, bad)
    with pytest.raises(DataQualityError, match="label label must be 0 or 1"):
        load_model_data(spark, conf, RUN_DATE)
    with pytest.raises(DataQualityError, match="no rows"):
        load_model_data(spark, conf, RUN_DATE + dt.timedelta(days=3))


# ---------------------------------------------------------------------------------------------------
# the train job end to end: Spark training, MLflow run contents, registry aliases, gate, tuning

N_ROUNDS = 15


@pytest.fixture(scope="module")
def job_env(spark, tmp_path_factory):
    """A warehouse with a gold training set, and the job arguments pointing at it."""
    from lakeloop.conf import load_conf

    root = tmp_path_factory.mktemp("train-job")
    sets = [f"warehouse={root / 'warehouse'}", f"landing={root / 'landing'}", "spark.scheduler.mode=FIFO",
            f"train.params.n_estimators={N_ROUNDS}", "train.params.max_depth=4", "train.gate_margin=0.01"]
    conf = load_conf("local", sets, conf_dir=ROOT / "conf")
    write_gold(spark, conf, training_frame(spark, RUN_DATE))
    args = ["--conf-dir", str(ROOT / "conf"), "--date", RUN_DATE.isoformat()]
    for s in sets:
        args += ["--set", s]
    return conf, args


def run_train(args, *extra):
    from jobs import train as train_job

    return train_job.main([*args, *extra])


def latest_report(conf):
    return json.loads((Path(conf.path("warehouse")) / "_reports" / "train" / "dt=2026-11-10.json").read_text())


@pytest.fixture(scope="module")
def first_run(job_env):
    conf, args = job_env
    rc = run_train(args)
    return conf, args, rc, latest_report(conf)


@pytest.mark.slow
def test_train_job_registers_challenger_and_promotes_over_baseline(first_run):
    conf, _, rc, report = first_run
    assert rc == 0
    assert report["gate"]["decision"] == "promoted" and report["gate"]["reference"].startswith("baseline")
    assert report["model_version"] == "1" and report["input_versions"] == {"gold.training_set": 0}
    assert registry.alias_version(conf, registry.CHALLENGER) == "1"
    assert registry.alias_version(conf, registry.CHAMPION) == "1"
    champion = mlflow.pyfunc.load_model(registry.model_uri(conf["mlflow.model_name"], "champion"))
    rows = training_pandas(RUN_DATE, users=5, seed=9)[train_data.FEATURES].astype("float64")
    scores = np.asarray(champion.predict(rows))
    assert scores.shape == (len(rows),) and ((scores > 0) & (scores < 1)).all()


@pytest.mark.slow
def test_train_run_logs_what_reproduces_it(first_run):
    conf, _, _, report = first_run
    client = registry.client(conf)
    run = client.get_run(report["mlflow_run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["param.max_depth"] == "4" and params["param.n_estimators"] == str(N_ROUNDS)
    assert params["features"] == ",".join(train_data.FEATURES)
    assert params["input.gold.training_set.version"] == "0" == tags["input.gold.training_set.version"]
    assert params["train.seed"] == str(conf["train.seed"])
    assert tags["lakeloop.run_date"] == "2026-11-10" and tags["gate.decision"] == "promoted"
    for name in ("training-logloss", "validation-logloss", "validation-auc"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == list(range(N_ROUNDS)), name
    logloss = [m.value for m in client.get_metric_history(run.info.run_id, "training-logloss")]
    assert logloss[-1] < logloss[0]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"features.json", "evaluation", "report", "feature_importance.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert plots == {f"evaluation/{n}.png" for n in ("roc", "pr", "calibration", "feature_importance")}
    assert mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/features.json")["features"] == train_data.FEATURES
    model = mlflow.models.get_model_info(report["model_uri"])
    assert model.flavors.keys() >= {"xgboost", "python_function"}
    assert [c.name for c in model.signature.inputs.inputs] == train_data.FEATURES
    assert model.saved_input_example_info is not None
    example = mlflow.models.Model.load(report["model_uri"]).load_input_example(
        mlflow.artifacts.download_artifacts(report["model_uri"]))
    assert list(example.columns) == train_data.FEATURES


@pytest.mark.slow
def test_shuffled_labels_job_is_refused_with_exit_code_4(first_run):
    conf, args, _, _ = first_run
    rc = run_train(args, "--shuffle-labels")
    assert rc == EXIT_GATE_REFUSED
    report = latest_report(conf)
    assert report["shuffle_labels"] is True and report["gate"]["decision"] == "refused"
    assert report["gate"]["reference"] == "champion v1"
    assert registry.alias_version(conf, registry.CHAMPION) == "1"
    refused = report["model_version"]
    assert registry.alias_version(conf, registry.CHALLENGER) == refused
    version = registry.client(conf).get_model_version(conf["mlflow.model_name"], refused)
    assert version.tags["gate.decision"] == "refused"
    assert registry.client(conf).get_run(report["mlflow_run_id"]).data.tags["gate.decision"] == "refused"


@pytest.mark.slow
def test_tuning_runs_trials_as_nested_runs(first_run):
    conf, args, _, _ = first_run
    rc = run_train(args, "--tune", "3", "--set", "train.params.n_estimators=5")
    assert rc in (0, EXIT_GATE_REFUSED)
    report = latest_report(conf)
    parent = report["mlflow_run_id"]
    client = registry.client(conf)
    experiment = client.get_experiment_by_name(conf["mlflow.experiment"]).experiment_id
    nested = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(nested) == 3 == len(report["tuning"]["trials"])
    space = conf["train.tune_space"]
    for run in nested:
        assert run.data.tags["lakeloop.trial"] in {"0", "1", "2"}
        assert 0.5 < run.data.metrics["holdout_auc"] <= 1.0
        assert all(run.data.params[k] in {str(v) for v in space[k]} for k in space)
        assert run.data.params["device"] == "cpu"
        assert len(client.get_metric_history(run.info.run_id, "validation-auc")) == int(run.data.params["n_estimators"])
    best = report["tuning"]["trials"][report["tuning"]["best"]]
    assert best["auc"] == max(t["auc"] for t in report["tuning"]["trials"])
    params = client.get_run(parent).data.params
    assert all(params[f"param.{k}"] == str(v) for k, v in best["params"].items())


@pytest.mark.slow
def test_train_on_gold_data_from_the_pipeline(spark, tmp_path):
    """datagen -> ingest -> curate -> features -> train for one date, on a few thousand events."""
    import importlib

    sets = [f"warehouse={tmp_path / 'warehouse'}", f"landing={tmp_path / 'landing'}", "datagen.events=4000",
            "datagen.users=200", "datagen.items=100", "spark.scheduler.mode=FIFO", "train.params.n_estimators=10"]
    args = ["--conf-dir", str(ROOT / "conf"), "--date", "2026-11-01"]
    for s in sets:
        args += ["--set", s]
    for job in ("datagen", "ingest", "curate", "features"):
        assert importlib.import_module(f"jobs.{job}").main(args) == 0, job
    rc = run_train(args)
    report = json.loads((tmp_path / "warehouse" / "_reports" / "train" / "dt=2026-11-01.json").read_text())
    assert rc == (0 if report["gate"]["decision"] == "promoted" else EXIT_GATE_REFUSED)
    assert report["model_version"] == "1" and report["gate"]["holdout_rows"] > 0
    assert report["input_versions"]["gold.training_set"] is not None
    assert report["gate"]["challenger_value"] is not None  # passed the infra check and was scored


def test_a_train_rerun_from_the_same_input_is_skipped_and_force_trains_again(spark, tmp_path):
    """Decided before any data is read: the same training partition, settings, options and champion skip
    (no new model version, the stored outcome's exit code); ``--force`` trains and registers a new one."""
    from lakeloop.conf import load_conf

    sets = [f"warehouse={tmp_path / 'warehouse'}", f"landing={tmp_path / 'landing'}", "spark.scheduler.mode=FIFO",
            "train.params.n_estimators=5", "train.params.max_depth=3", "train.gate_resamples=20"]
    conf = load_conf("local", sets, conf_dir=ROOT / "conf")
    write_gold(spark, conf, training_frame(spark, RUN_DATE))
    args = ["--conf-dir", str(ROOT / "conf"), "--date", RUN_DATE.isoformat(), *[a for s in sets for a in ("--set", s)]]
    first = run_train(args)
    registry.setup(conf)
    trained = registry.version_for_alias(conf, registry.CHALLENGER).version
    assert run_train(args) == first  # the same outcome, from the report
    assert registry.version_for_alias(conf, registry.CHALLENGER).version == trained
    assert run_train([*args, "--force"]) in (0, EXIT_GATE_REFUSED)
    assert int(registry.version_for_alias(conf, registry.CHALLENGER).version) == int(trained) + 1
