"""Scoring specs (the ``scoring:`` section of conf/models/<name>.yaml): spec errors exit 2 naming file and key,
and a non-recommender regression model scores the rows of a SQL query or a table with the features of its
training set, loads the serving store under the declared key, and refuses too few rows (exit 3) or a serving
field it lacks (exit 2) without touching the table or the store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml
from lakeloop import infer, scoring
from lakeloop.conf import ConfError
from lakeloop.errors import DataQualityError
from lakeloop.train import spec

from tests.test_featuresets import src_rows, write_specs
from tests.test_models import conf_with_models

DAY = dt.date(2026, 3, 10)
OBS = {"source": "silver.obs", "entity": "k", "time": "ts", "window": "3d", "as_of": "start_of_day",
       "features": [{"name": "n", "kind": "aggregate", "agg": "count"},
                    {"name": "x_sum", "kind": "aggregate", "agg": "sum", "expr": "x"}]}
TRIPS = {"label": {"kind": "row", "source": "silver.obs", "entity": ["k"], "time": "ts", "expr": "x", "type": "double"},
         "features": [{"set": "obs", "columns": {"prior_n": "n", "prior_sum": "x_sum"}}]}
FEATURES = ["prior_n", "prior_sum"]
# (k, g, x, hours from the run date's start): keys 1-3 have rows on the run date, key 4 only 4 days before
ROWS = [(1, "a", 2.0, -30), (1, "a", 3.0, 5), (2, "b", 1.0, 10), (2, "b", 4.0, 20), (3, "a", 7.0, 1),
        (4, "a", 9.0, -96)]


def model_spec(**scoring_section) -> str:
    return yaml.safe_dump({"mlflow_name": "demand", "table": "gold.trips", "task": "regression", "keys": ["k"],
                           "split": {"kind": "random"}, "gate": {"metric": "rmse"}, "scoring": scoring_section})


SQL_SPEC = {"rows": {"sql": "select k from silver.obs where dt = '${run_date}'"}, "min_rows": 2,
            "table": "gold.demand_scores", "serving": {"key": "k", "value": "score"}}


@pytest.fixture(scope="module")
def regression_model(tmp_path_factory):
    """An xgboost regression model on the two features (target 2 * prior_sum + prior_n), saved as MLflow."""
    import mlflow.xgboost
    import xgboost as xgb
    from lakeloop.train.tasks import signature

    rng = np.random.default_rng(5)
    x = pd.DataFrame({"prior_n": rng.integers(0, 4, 400).astype(float), "prior_sum": rng.uniform(0, 12, 400)})
    booster = xgb.train({"objective": "reg:squarederror", "max_depth": 3, "nthread": 1},
                        xgb.DMatrix(x, label=2 * x["prior_sum"] + x["prior_n"], feature_names=FEATURES), 30)
    path = tmp_path_factory.mktemp("reg") / "model"
    mlflow.xgboost.save_model(booster, str(path), model_format="ubj", signature=signature("regression", FEATURES))
    return infer.model_ref("demand", "1", str(path)), booster


def lake_conf(spark, tmp_path, scoring_section: dict):
    from lakeloop import tables

    specs = write_specs(tmp_path / "specs", {"obs": OBS}, {"trips": TRIPS})
    conf = conf_with_models(tmp_path, {"demand": model_spec(**scoring_section)}, f"features.spec_dir={specs}")
    uri = conf.table_uri("silver.obs")
    if not tables.exists(uri):
        tables.write(src_rows(spark, ROWS), uri, mode="overwrite", partition_by=["dt"])
    return spec.model_conf(conf)


def expected_scores(booster, keys) -> dict[int, float]:
    """Features as of the end of the run date by hand: the rows of the 3 days before it (a sum of none is
    null: a missing value for the model)."""
    import xgboost as xgb

    window = [(k, x) for k, _, x, hours in ROWS if -48 <= hours < 24]
    mine = {k: [x for j, x in window if j == k] for k in keys}
    frame = pd.DataFrame([{"prior_n": float(len(mine[k])), "prior_sum": sum(mine[k]) if mine[k] else np.nan}
                          for k in keys])
    return dict(zip(keys, booster.predict(xgb.DMatrix(frame, feature_names=FEATURES)).tolist(), strict=True))


def test_sql_and_table_rows_are_scored_and_served_by_key(spark, tmp_path, regression_model):
    from lakeloop import tables
    from lakeloop.serving import open_store

    ref, booster = regression_model
    conf = lake_conf(spark, tmp_path, SQL_SPEC)
    result = infer.score_for_date(spark, conf, conf.scoring, DAY, "r1", ref)
    got = tables.read(spark, conf.table_uri("gold.demand_scores")).toPandas()
    assert sorted(got["k"]) == [1, 2, 3] and result.rows == 3 == result.keys  # duplicates of the query removed
    assert set(got.columns) == {"k", "score", "model_name", "model_version", "run_id", "scored_at", "dt"}
    want = expected_scores(booster, [1, 2, 3])
    store = open_store(conf)
    assert store.current_version() == result.serving_version
    np.testing.assert_allclose(store.get_many([1, 2, 3]), [want[k] for k in (1, 2, 3)], rtol=1e-6)

    # rows from a table (its run-date partition), values as mappings of the declared fields
    tables.write(spark.createDataFrame([(2, DAY.isoformat()), (4, DAY.isoformat()), (1, "2026-03-09")],
                                       "k long, dt string"), conf.table_uri("gold.watch"), mode="overwrite",
                 partition_by=["dt"])
    conf = lake_conf(spark, tmp_path, {**SQL_SPEC, "rows": {"table": "gold.watch"},
                                       "serving": {"key": "k", "value": "forecast", "fields": ["k", "score"]}})
    again = infer.score_for_date(spark, conf, conf.scoring, DAY, "r2", ref)
    want = expected_scores(booster, [2, 4])
    values = store.get_many([2, 4, 1])
    assert store.current_version() == again.serving_version and values[2] is None
    assert [v["k"] for v in values[:2]] == [2, 4]
    np.testing.assert_allclose([v["score"] for v in values[:2]], [want[2], want[4]], rtol=1e-6)


def test_too_few_rows_or_a_wrong_serving_field_change_neither_table_nor_store(spark, tmp_path, regression_model):
    from lakeloop import tables
    from lakeloop.serving import open_store

    ref = regression_model[0]
    conf = lake_conf(spark, tmp_path, SQL_SPEC)
    served = infer.score_for_date(spark, conf, conf.scoring, DAY, "r1", ref).serving_version
    table_version = tables.version(conf.table_uri("gold.demand_scores"))
    for where, message in (("k = 3", "1 rows to score, fewer than the minimum 2"),
                           ("k > 9", "0 rows to score, fewer than the minimum 2")):
        few = lake_conf(spark, tmp_path, {**SQL_SPEC, "rows": {"sql": f"select k from silver.obs where {where}"}})
        with pytest.raises(DataQualityError, match=message) as err:
            infer.score_for_date(spark, few, few.scoring, DAY, "r2", ref)
        assert err.value.exit_code == 3
    wrong = lake_conf(spark, tmp_path, {**SQL_SPEC, "serving": {"key": "k", "value": "v", "fields": ["k", "price"]}})
    with pytest.raises(ConfError, match=r"demand\.yaml: scoring\.serving: the predictions have no column 'price'"):
        infer.score_for_date(spark, wrong, wrong.scoring, DAY, "r3", ref)
    assert open_store(conf).current_version() == served
    assert tables.version(conf.table_uri("gold.demand_scores")) == table_version


@pytest.mark.parametrize("section, message", [
    ({"rows": {"query": "x"}}, r"scoring\.rows\.query: unknown key: expected one of table, sql, generator"),
    ({"rows": {"table": "gold.a", "sql": "select 1"}}, r"scoring\.rows: expected exactly one of table, sql, generator"),
    ({"rows": {"generator": "no_colon"}}, r"scoring\.rows\.generator: expected package\.module:function"),
    ({"rows": {"table": "predictions"}}, r"scoring\.rows\.table: expected layer\.name"),
    ({"as_of": "noon"}, r"scoring\.as_of: expected one of end_of_day, start_of_day, got 'noon'"),
    ({"serving": {"key": "k"}}, r"scoring\.serving\.value: a value is required"),
    ({"serving": {"key": "k", "value": "v", "rank_by": ["score down"], "fields": ["k"]}},
     r"scoring\.serving\.rank_by\[0\]: expected 'column', 'column asc' or 'column desc'"),
    ({"serving": {"key": "k", "value": "v", "rank_by": ["score"]}}, r"scoring\.serving\.fields: per-key lists"),
    ({"serving": {"key": "k", "value": "v", "top": 3}}, r"scoring\.serving\.top: unknown key: expected one of key"),
    ({"min_rows": "many"}, r"scoring\.min_rows \(infer\.min_rows\): expected an integer, got .many."),
    ({"colour": 1}, r"scoring\.colour: unknown key: expected one of rows, as_of"),
])
def test_scoring_spec_errors_name_the_file_and_key(tmp_path, section, message):
    conf = conf_with_models(tmp_path, {"demand": model_spec(**section)})
    with pytest.raises(ConfError, match=r"demand\.yaml: " + message):
        spec.model_conf(conf)


@pytest.mark.parametrize("section, message", [
    ({"min_rows": 1}, r"scoring\.rows: required to run infer"),
    ({"rows": {"table": "gold.a"}}, r"scoring\.serving: required to run infer"),
    ({**SQL_SPEC, "rows": {"generator": "nowhere.module:rows"}},
     r"scoring\.rows\.generator: 'nowhere\.module:rows': No module named 'nowhere'"),
    ({**SQL_SPEC, "rows": {"generator": "lakeloop.scoring:nothing"}},
     r"scoring\.rows\.generator: .*has no attribute 'nothing'"),
])
def test_what_infer_needs_is_checked_before_it_starts(tmp_path, section, message):
    conf = spec.model_conf(conf_with_models(tmp_path, {"demand": model_spec(**section)}))
    with pytest.raises(ConfError, match=r"demand\.yaml: " + message):
        scoring.required(conf.scoring, "")


def test_infer_job_with_a_bad_scoring_spec_exits_2(spark, tmp_path, capfd):
    import importlib

    section = {**SQL_SPEC, "rows": {"generator": "nowhere.module:rows"}}
    conf = conf_with_models(tmp_path, {"demand": model_spec(**section)})
    main = importlib.import_module("jobs.infer").main
    assert main(["--date", DAY.isoformat(), "--set", f"warehouse={conf['warehouse']}", "--set",
                 f"landing={conf['landing']}", "--set", f"train.models_dir={tmp_path / 'models'}"]) == 2
    stopped = "demand.yaml: scoring.rows.generator: 'nowhere.module:rows': No module named 'nowhere'"
    assert stopped in capfd.readouterr().err


def test_a_rerun_from_the_same_input_is_skipped_and_new_input_or_force_scores_again(spark, tmp_path,
                                                                                      regression_model):
    """The decision is made from the logs and the marker before any data is read: the same model, specs and
    input partitions skip; a new row in an input partition, a switched serving version or ``force`` score."""
    from lakeloop import tables
    from lakeloop.serving import open_store

    ref, _ = regression_model
    conf = lake_conf(spark, tmp_path, SQL_SPEC)
    first = infer.score_for_date(spark, conf, conf.scoring, DAY, "r1", ref)
    version = tables.version(conf.table_uri("gold.demand_scores"))
    again = infer.score_for_date(spark, conf, conf.scoring, DAY, "r2", ref)
    assert again.skipped and again.serving_version == first.serving_version and again.rows == first.rows
    assert tables.version(conf.table_uri("gold.demand_scores")) == version
    assert open_store(conf).current_version() == first.serving_version

    tables.write(src_rows(spark, [(5, "b", 1.0, 3)]), conf.table_uri("silver.obs"), mode="append")  # on DAY
    changed = infer.score_for_date(spark, conf, conf.scoring, DAY, "r3", ref)
    assert not changed.skipped and changed.rows == first.rows + 1
    assert open_store(conf).current_version() == changed.serving_version
    forced = infer.score_for_date(spark, conf, conf.scoring, DAY, "r4", ref, force=True)
    assert not forced.skipped and forced.serving_version.endswith("-r4")
