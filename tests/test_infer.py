"""Bulk inference: the recommender's candidates and scoring features (equal to the hand-written path's),
mapInArrow scoring with the xgboost fast path and the pyfunc fallback (model loads counted in the
workers), the task's outputs, and the infer job end to end on generated data with a trained champion,
on SQLite and Redis stores."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from lakeloop import infer
from lakeloop.featuresets import build
from lakeloop.featuresets.training import feature_rows
from lakeloop_apps.recommender import reference
from lakeloop_apps.recommender.candidates import candidate_pairs
from lakeloop_apps.recommender.model import FEATURES, KEYS
from pyspark.testing import assertDataFrameEqual

from tests.test_features import HISTORY, LABEL_DAY, LABEL_TS, PARAMS, declared, make_events, make_items, reader

END_OF_RUN_DATE = LABEL_TS + dt.timedelta(days=1)


@pytest.fixture(scope="module")
def items(spark):
    return make_items(spark)


@pytest.fixture(scope="module")
def events(spark):
    return make_events(spark, HISTORY + LABEL_DAY)


def cores(spark) -> int:
    """Task slots of the local master (local[N]): the most Python workers that run at once."""
    master = spark.sparkContext.master
    assert master.startswith("local[") and master[6:-1].isdigit(), master
    return int(master[6:-1])


def rows_by_pair(df):
    return {(r["user_id"], r["item_id"]): r.asDict() for r in df.collect()}


def scoring_features(specs, read, pairs, as_of):
    """The recommender's scoring frame as infer builds it: the training set's joins on the pairs, as of ``as_of``."""
    from pyspark.sql import functions as F

    rows = feature_rows(specs.training["training_set"], specs.sets, read, pairs, as_of)
    return rows.select(*KEYS, *[F.col(c).cast("double").alias(c) for c in FEATURES])


def hand_written_scoring_frame(events, items, pairs, as_of, params):
    """What infer scored before scoring specs: ``reference.training_set`` given the history before ``as_of``
    plus one synthetic label event per pair at ``as_of``, negative sampling off."""
    from pyspark.sql import functions as F

    at = F.timestamp_micros(F.lit(int(as_of.timestamp() * 1_000_000)))
    history = events.where(F.col("ts") < at)
    marks = (pairs.select(*KEYS).distinct().withColumn("type", F.lit(params.label_types[0])).withColumn("ts", at)
             .withColumn("event_id", F.concat(F.lit("_score_"), F.col("user_id").cast("string"), F.lit("_"),
                                              F.col("item_id").cast("string"))))
    marks = marks.select(*[F.col(f.name).cast(f.dataType) if f.name in marks.columns
                           else F.lit(None).cast(f.dataType).alias(f.name) for f in history.schema.fields])
    rows = reference.training_set(history.unionByName(marks), items, as_of,
                                  dataclasses.replace(params, negatives_per_positive=0))
    return rows.select(*KEYS, *[F.col(c).cast("double").alias(c) for c in FEATURES])


# -- features: the training set's own code, as of the scoring time -----------------------------------------

def test_scoring_features_count_events_up_to_the_scoring_time(spark, events, items):
    pairs = spark.createDataFrame([(11, 3), (12, 5), (12, 2)], "user_id long, item_id long")
    specs, read = declared(PARAMS), reader(events, items)
    before = rows_by_pair(scoring_features(specs, read, pairs, LABEL_TS))
    after = rows_by_pair(scoring_features(specs, read, pairs, END_OF_RUN_DATE))
    assert set(before) == set(after) == {(11, 3), (12, 5), (12, 2)}  # exactly the pairs: no sampled negatives
    # the purchase of item 3 by user 11 on the run date counts at the end of that day, not at its start
    assert (before[(11, 3)]["user_purchases"], after[(11, 3)]["user_purchases"]) == (0.0, 1.0)
    assert (before[(11, 3)]["user_item_purchases"], after[(11, 3)]["user_item_purchases"]) == (0.0, 1.0)
    assert after[(12, 5)]["item_purchases"] == 1.0 and before[(12, 5)]["item_purchases"] == 0.0


def test_recommender_scores_equal_the_hand_written_path(spark, xgb_model, tmp_path):
    """Seeded demo data: the candidates' features and scores equal those of the hand-written
    ``reference.training_set`` path that infer used before scoring specs."""
    from tests.test_featuresets_recommender import seeded_silver

    events, items = (f.cache() for f in seeded_silver(spark, n_events=1200, users=30, items=20))
    run_date, params = dt.date(2026, 11, 1), reference.FeatureParams()
    specs, read = declared(params), reader(events, items)
    as_of = reference.day_start(run_date) + dt.timedelta(days=1)
    pairs = candidate_pairs(build.feature_frame(specs.sets["user_favours"], read, run_date),
                            build.feature_frame(specs.sets["item_stats"], read, run_date), 8, 2).cache()
    got = scoring_features(specs, read, pairs, as_of).cache()
    want = hand_written_scoring_frame(events, items, pairs, as_of, params).cache()
    assert got.count() == pairs.count() > 100
    assertDataFrameEqual(got, want)
    # infer's scores of the new frame are the model's predictions of the old one
    import xgboost as xgb

    booster = xgb_model[1]
    scored = infer.score(got, saved_xgb(booster, tmp_path / "model"), FEATURES, KEYS).toPandas()
    old = scored[[*KEYS]].merge(want.toPandas(), on=list(KEYS), how="left")  # in the scored rows' order
    np.testing.assert_allclose(scored["score"], booster.predict(xgb.DMatrix(old[FEATURES], feature_names=FEATURES)),
                               rtol=1e-6)


def test_candidates_are_recent_items_and_favourite_categories_bounded(spark, events, items):
    favours = reference.user_favours(events, items, END_OF_RUN_DATE, PARAMS)
    stats = reference.item_stats(events, items, END_OF_RUN_DATE, PARAMS)
    cats = {r["item_id"]: r["category"] for r in stats.collect()}
    fav = {r["user_id"]: r for r in favours.collect()}

    got: dict[int, set[int]] = {}
    for r in candidate_pairs(favours, stats, per_user=3, categories=1).collect():
        got.setdefault(r["user_id"], set()).add(r["item_id"])
    assert set(got) == set(fav)
    for user, picked in got.items():
        assert 1 <= len(picked) <= 3
        top_cat = max(fav[user]["category_affinity"].items(), key=lambda kv: (kv[1], [-ord(c) for c in kv[0]]))[0]
        recent = [x["item_id"] for kind in ("likes", "reviews", "purchases") for x in fav[user][kind] or []]
        assert all(i in recent[:1] or cats[i] == top_cat for i in picked), (user, picked, top_cat)
    assert 5 in got[10]  # user 10's most recent like

    wide = candidate_pairs(favours, stats, per_user=50, categories=3).where("user_id = 10").collect()
    recent10 = {x["item_id"] for kind in ("likes", "reviews", "purchases") for x in fav[10][kind]}
    in_fav_cats = {i for i, c in cats.items() if c in fav[10]["category_affinity"]}
    assert {r["item_id"] for r in wide} == recent10 | in_fav_cats
    with pytest.raises(ValueError, match="must be >= 1"):
        candidate_pairs(favours, stats, per_user=0, categories=1)


# -- scoring ------------------------------------------------------------------------------------------------

def random_features(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    frame.loc[rng.uniform(size=n) < 0.2, "seconds_since_user_item"] = np.nan  # missing values
    return frame


@pytest.fixture(scope="module")
def xgb_model(tmp_path_factory):
    import xgboost as xgb

    train = random_features(2000, 1)
    label = (train["item_price"] + train["user_events"] > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(train, label=label, feature_names=FEATURES), num_boost_round=20)
    return saved_xgb(booster, tmp_path_factory.mktemp("xgb") / "model"), booster


def saved_xgb(booster, path):
    """``booster`` as an MLflow model at ``path`` (its own artifact URI: no worker has it cached)."""
    import mlflow.xgboost

    mlflow.xgboost.save_model(booster, str(path), model_format="ubj")
    return infer.model_ref("m", "1", str(path))


def scored_against(spark, ref, frame, partitions=8, batch=37, task="binary"):
    sdf = spark.createDataFrame(frame.assign(user_id=np.arange(len(frame)), item_id=7)).repartition(partitions)
    loads = spark.sparkContext.accumulator(0)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch))
    try:
        out = infer.score(sdf, ref, FEATURES, KEYS, loads=loads, task=task).toPandas().sort_values("user_id")
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    return out, loads.value


@pytest.mark.slow
def test_xgboost_fast_path_scores_like_booster_predict_and_loads_once_per_worker(spark, xgb_model):
    import xgboost as xgb

    ref, booster = xgb_model
    assert "xgboost" in ref.flavors
    frame = random_features(1000, 2)
    out, loads = scored_against(spark, ref, frame)
    want = booster.predict(xgb.DMatrix(frame, feature_names=FEATURES))
    assert list(out.columns) == ["user_id", "item_id", "score"] and len(out) == 1000
    np.testing.assert_allclose(out["score"].to_numpy(), want, rtol=1e-6)
    # 8 partitions of ~27 batches each ran on at most 2 reused workers (local[2]); a fresh
    # model URI so no earlier test warmed the cache
    assert 1 <= loads <= cores(spark) < 8
    _, again = scored_against(spark, ref, frame)
    assert again == 0  # cached in the reused workers


def test_pyfunc_fallback_for_other_flavours(spark, tmp_path):
    import mlflow.pyfunc
    from lakeloop.train.run import model_signature

    class Logistic(mlflow.pyfunc.PythonModel):  # local: pickled by value into the model
        """A pyfunc model without a native flavour: probability from two features."""

        def predict(self, context, model_input, params=None):
            return 1 / (1 + np.exp(-(model_input["item_price"] - model_input["user_events"])))

    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=Logistic(), signature=model_signature(FEATURES))
    ref = infer.model_ref("m", "2", str(tmp_path / "pyfunc"))
    assert "xgboost" not in ref.flavors and ref.features == tuple(FEATURES)
    frame = random_features(300, 3)
    out, loads = scored_against(spark, ref, frame, partitions=4, batch=50)
    want = 1 / (1 + np.exp(-(frame["item_price"].astype("float32") - frame["user_events"].astype("float32"))))
    np.testing.assert_allclose(out["score"].to_numpy(), want.to_numpy(), rtol=1e-5)
    assert 1 <= loads <= 2


def test_multiclass_scores_are_the_predicted_class_and_its_probability(spark, tmp_path):
    import mlflow.pyfunc
    from lakeloop.train.run import model_signature

    class Softmax(mlflow.pyfunc.PythonModel):  # local: pickled by value into the model
        """Three class probabilities from two features, as a multiclass model's p_0..p_2 frame."""

        def predict(self, context, model_input, params=None):
            logits = np.stack([model_input["item_price"], model_input["user_events"], np.zeros(len(model_input))], 1)
            p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            return pd.DataFrame(p, columns=["p_0", "p_1", "p_2"])

    mlflow.pyfunc.save_model(str(tmp_path / "mc"), python_model=Softmax(),
                             signature=model_signature(FEATURES, "multiclass", 3))
    frame = random_features(200, 4)
    out, _ = scored_against(spark, infer.model_ref("m", "3", str(tmp_path / "mc")), frame, partitions=2,
                            batch=64, task="multiclass")
    logits = np.stack([frame["item_price"], frame["user_events"], np.zeros(len(frame))], 1).astype("float32")
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert list(out.columns) == ["user_id", "item_id", "score", "prediction"]
    assert out["prediction"].tolist() == p.argmax(axis=1).tolist()
    np.testing.assert_allclose(out["score"].to_numpy(), p.max(axis=1), rtol=1e-5)


def test_task_outputs():
    two = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert infer.task_outputs(two, "binary")[0].tolist() == [0.8, 0.1]  # the positive class's column
    assert infer.task_outputs(np.array([1.5, -2.0]), "regression")[0].tolist() == [1.5, -2.0]
    score, prediction = infer.task_outputs(np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]), "multiclass")
    assert score.tolist() == [0.5, 0.6] and prediction.tolist() == [1, 0]
    with pytest.raises(infer.LakeloopError, match="class probabilities"):
        infer.task_outputs(np.array([0.1, 0.2]), "multiclass")


def test_scoring_frame_without_features_is_refused(spark, xgb_model):
    with pytest.raises(Exception, match="lacks columns item_price"):
        infer.score(spark.range(3).selectExpr("id AS user_id", "id AS item_id"), xgb_model[0], FEATURES, KEYS)


# -- the job end to end: generated data -> gold -> trained champion -> infer ----------------------------------

DAYS = ("2026-11-01", "2026-11-02")
RUN_DATE = dt.date(2026, 11, 2)


def recommender_lake(root, extra: tuple[str, ...] = ()) -> tuple:
    """Two days through datagen, ingest, curate and features under ``root``, then a trained @champion:
    ``(conf, overrides, job arguments, champion version)``."""
    import importlib

    from lakeloop.conf import load_conf
    from lakeloop.train import registry

    from tests.conftest import ROOT

    overrides = [f"warehouse={root / 'warehouse'}", f"landing={root / 'landing'}", "datagen.events=3000",
                 "datagen.users=120", "datagen.items=80", "train.num_workers=1", "validate.enabled=false",
                 "infer.candidates_per_user=12", "infer.top_n=5", *extra]
    args = [x for o in overrides for x in ("--set", o)]
    for day in DAYS:
        for job in ("datagen", "ingest", "curate", "features") + (("train",) if day == DAYS[-1] else ()):
            assert importlib.import_module(f"jobs.{job}").main(["--date", day, *args]) == 0, (job, day)
    conf = load_conf("local", overrides, conf_dir=ROOT / "conf")
    champion = registry.version_for_alias(conf, registry.CHAMPION)
    assert champion is not None
    return conf, overrides, args, str(champion.version)


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    """:func:`recommender_lake` in a temporary directory."""
    return recommender_lake(tmp_path_factory.mktemp("infer-e2e"))


def read_predictions(spark, conf):
    from lakeloop import tables

    return tables.read(spark, conf.table_uri("gold.predictions")).toPandas()


def top_from_table(predictions, user, n):
    rows = predictions[predictions["user_id"] == user].sort_values("rank").head(n)
    return [{"item_id": int(r.item_id), "score": float(r.score)} for r in rows.itertuples()]


@pytest.mark.slow
def test_infer_end_to_end_on_sqlite_then_redis(spark, pipeline, redis_server, monkeypatch):  # noqa: F811
    """Three runs of the date (each costs a full scoring pass, so they share one test): the champion
    on SQLite, a re-run with the explicit version on Redis, and a run whose serving load fails."""
    from lakeloop.conf import load_conf
    from lakeloop.serving import open_store

    from tests.conftest import ROOT

    conf, overrides, args, champion = pipeline
    sqlite = open_store(conf)
    result = infer.infer_for_date(spark, conf, RUN_DATE, "run1")
    first = read_predictions(spark, conf)
    assert result.model.version == champion and result.rows == len(first) > 0
    assert set(first["dt"]) == {"2026-11-02"} and set(first["model_version"]) == {champion}
    assert set(first["model_name"]) == {conf["mlflow.model_name"]} and set(first["run_id"]) == {"run1"}
    per_user = first.groupby("user_id")["rank"].agg(["count", "min", "max"])
    assert (per_user["count"] <= 12).all() and (per_user["min"] == 1).all()
    assert (per_user["max"] == per_user["count"]).all()
    assert first["score"].between(0, 1).all() and first["score"].nunique() > 10
    # the model was loaded once per Python worker, not once per partition
    assert 1 <= result.model_loads <= cores(spark) < result.scoring_partitions

    # the store serves the new version, with one top-5 list for every scored user
    assert sqlite.current_version() == result.serving_version == f"2026-11-02-v{champion}-run1"
    assert sqlite.load_info(result.serving_version).count == result.keys == len(per_user)
    users = [int(u) for u in per_user.index[:20]]
    assert sqlite.get_many(users) == [top_from_table(first, u, 5) for u in users]

    # re-run of the date (explicit version, Redis store): the partition is replaced, not appended to
    on_redis = load_conf("local", [*overrides, "serving.store=redis", f"serving.redis.port={redis_server.port}",
                                   "serving.namespace=infer-e2e"], conf_dir=ROOT / "conf")
    again = infer.infer_for_date(spark, on_redis, RUN_DATE, "run2", model_version=champion)
    second = read_predictions(spark, conf)
    cols = ["user_id", "item_id", "score", "rank", "model_version", "dt"]
    pd.testing.assert_frame_equal(second[cols].sort_values(cols).reset_index(drop=True),
                                  first[cols].sort_values(cols).reset_index(drop=True))
    redis = open_store(on_redis)
    assert redis.current_version() == again.serving_version and again.keys == result.keys
    assert redis.get_many(users) == sqlite.get_many(users)
    with pytest.raises(infer.ModelNotFound, match="version 999 not found"):
        infer.infer_for_date(spark, on_redis, RUN_DATE, "run3", model_version=999)

    # a serving load failing in one partition never switches: the job fails, the old version serves
    monkeypatch.setattr(infer, "push_serving", failing_in_partition(infer.push_serving, 1))
    assert importlib_main("infer")(["--date", "2026-11-02", *args]) == 1
    assert sqlite.current_version() == result.serving_version
    assert sqlite.versions() == [result.serving_version]  # the failed load was aborted
    assert sqlite.get_many(users) == [top_from_table(first, u, 5) for u in users]


def failing_in_partition(push, partition: int):
    """Fault injection: ``push`` whose frame raises in Spark partition ``partition`` while it is loaded."""
    from pyspark.sql import functions as F

    def push_failing(store, frame, version, serving):
        failing = F.when(F.spark_partition_id() == partition,
                         F.raise_error(F.lit(f"injected failure in partition {partition}")))
        return push(store, frame.withColumn(serving.value, failing.otherwise(F.col(serving.value))), version, serving)

    return push_failing


def importlib_main(job):
    import importlib

    return importlib.import_module(f"jobs.{job}").main
