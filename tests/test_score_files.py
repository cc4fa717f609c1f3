"""The file path of bulk scoring (lakeloop.score_files): a table on disk that holds the model's features
(``features: rows`` of ``rows: {table}``) is scored by tasks that read its files with pyarrow, and the
predictions they write are committed through the Delta bridge.  Its predictions table equals the one the
mapInArrow path writes for the same input; a computed frame takes mapInArrow; the choice is logged; a re-run
replaces the date's partition."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from lakeloop import infer, score_files, tables
from lakeloop.train import spec
from pyspark.testing import assertDataFrameEqual

from tests.test_models import conf_with_models
from tests.test_scoring_spec import FEATURES, regression_model  # noqa: F401 - the model fixture

DAY = dt.date(2026, 3, 10)
FRAME = "gold.scoring_frame"
#: (k, prior_n, prior_sum, dt): prior_n is a long (cast to double as mapInArrow casts it), nulls are missing values
ROWS = [(k, None if k % 7 == 0 else k % 4, None if k % 5 == 0 else k * 0.37 % 12, DAY.isoformat())
        for k in range(1, 61)] + [(100 + k, k, 1.5 * k, "2026-03-09") for k in range(5)]
SECTION = {"rows": {"table": FRAME}, "features": "rows", "table": "gold.demand_scores",
           "serving": {"key": "k", "value": "score"}}
RUN_COLUMNS = ["scored_at", "run_id"]


def model_conf(tmp_path, section: dict, *settings: str):
    text = yaml.safe_dump({"mlflow_name": "demand", "table": "gold.trips", "task": "regression", "keys": ["k"],
                           "split": {"kind": "random"}, "gate": {"metric": "rmse"}, "scoring": section})
    return spec.model_conf(conf_with_models(tmp_path, {"demand": text}, *settings))


@pytest.fixture
def frame_table(spark, tmp_path):
    """The scoring frame on disk: the run date's partition in three files."""
    conf = model_conf(tmp_path, SECTION)
    rows = spark.createDataFrame(ROWS, "k long, prior_n long, prior_sum double, dt string").repartition(3)
    tables.write(rows, conf.table_uri(FRAME), mode="overwrite", partition_by=["dt"])
    return conf


def predictions(spark, conf, table: str):
    return tables.read(spark, conf.table_uri(table), where=f"dt = '{DAY.isoformat()}'").drop(*RUN_COLUMNS)


def run(spark, conf, ref, run_id: str, caplog) -> tuple[infer.InferResult, str]:
    """``score_for_date`` (forced: every call scores) and its one log line naming the path taken."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lakeloop.infer"):
        result = infer.score_for_date(spark, conf, conf.scoring, DAY, run_id, ref, force=True)
    lines = [r.getMessage() for r in caplog.records if "scoring on the file path" in r.getMessage()
             or "scoring through mapInArrow" in r.getMessage()]
    assert len(lines) == 1, lines
    return result, lines[0]


def test_file_path_predictions_equal_mapinarrow_and_a_rerun_replaces_the_date(
        spark, tmp_path, frame_table, regression_model, caplog):  # noqa: F811
    import xgboost as xgb
    from lakeloop.serving import open_store

    ref, booster = regression_model
    on_files, line = run(spark, frame_table, ref, "r1", caplog)
    assert "file path" in line and "3 files of the dt=2026-03-10 partition of gold.scoring_frame" in line
    assert on_files.rows == 60 == on_files.keys and on_files.model_loads >= 1

    jvm_conf = model_conf(tmp_path, {**SECTION, "table": "gold.demand_scores_jvm"}, "infer.read_files=false")
    in_jvm, line = run(spark, jvm_conf, ref, "r2", caplog)
    assert "mapInArrow: infer.read_files is false" in line and in_jvm.rows == 60
    got, want = predictions(spark, frame_table, "gold.demand_scores"), predictions(spark, jvm_conf,
                                                                                   "gold.demand_scores_jvm")
    assert got.schema == want.schema
    assertDataFrameEqual(got, want)
    assert got.columns == ["k", "score", "model_name", "model_version", "dt"]

    day = [r for r in ROWS if r[3] == DAY.isoformat()]
    matrix = pd.DataFrame([r[1:3] for r in day], columns=FEATURES, dtype="float64")
    expected = booster.predict(xgb.DMatrix(matrix.astype("float32"), feature_names=FEATURES))
    scores = dict(got.select("k", "score").collect())
    np.testing.assert_allclose([scores[r[0]] for r in day], expected, rtol=1e-6)
    assert open_store(frame_table).current_version() == in_jvm.serving_version  # one store for both confs

    again, _ = run(spark, frame_table, ref, "r3", caplog)  # a new run id: the date is scored again, not appended
    assert again.rows == 60 and again.table_version == on_files.table_version + 1
    assertDataFrameEqual(predictions(spark, frame_table, "gold.demand_scores"), want)
    assert open_store(frame_table).current_version() == again.serving_version


@pytest.mark.parametrize("section, reason", [
    ({**SECTION, "rows": {"sql": f"select k, prior_n, prior_sum from {FRAME} where dt = '${{run_date}}'"}},
     "the scoring frame is computed (rows from sql)"),
    ({**SECTION, "serving": {"key": "k", "value": "top", "rank_by": ["score desc"], "fields": ["k", "score"]}},
     "serving.rank_by ranks each key's rows together"),
])
def test_a_computed_frame_takes_mapinarrow_with_the_same_predictions(
        spark, tmp_path, frame_table, regression_model, caplog, section, reason):  # noqa: F811
    ref = regression_model[0]
    run(spark, frame_table, ref, "r1", caplog)
    computed = model_conf(tmp_path, {**section, "table": "gold.demand_scores_jvm"})
    result, line = run(spark, computed, ref, "r2", caplog)
    assert f"scoring through mapInArrow: {reason}" in line and result.rows == 60
    got = predictions(spark, computed, "gold.demand_scores_jvm").drop("rank")
    assertDataFrameEqual(got, predictions(spark, frame_table, "gold.demand_scores"))


def test_features_joined_by_the_training_set_are_a_computed_frame(tmp_path, regression_model):  # noqa: F811
    conf = model_conf(tmp_path, {**SECTION, "features": "training_set"})
    source, why = score_files.table_source(conf, conf.scoring, regression_model[0], DAY)
    assert source is None
    assert why == "the scoring frame is computed (the training set's features are joined to the rows)"


def test_fewer_files_than_tasks_are_split_by_row_groups(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    conf = model_conf(tmp_path, SECTION)
    uri = conf.table_uri(FRAME)
    tables.write(spark.createDataFrame([(1, 1, 1.0, DAY.isoformat())], "k long, prior_n long, prior_sum double, "
                                       "dt string"), uri, mode="overwrite", partition_by=["dt"])
    (entry,) = score_files.table_source(conf, conf.scoring, infer.ModelRef("m", "1", "x"), DAY)[0].entries
    n = 1000
    pq.write_table(pa.table({"k": np.arange(n), "prior_n": np.arange(n), "prior_sum": np.ones(n)}),
                   f"{uri}/{entry.path}", row_group_size=100)  # the same file, now 10 row groups
    source = score_files.table_source(conf, conf.scoring, infer.ModelRef("m", "1", "x"), DAY)[0]
    parts, rows = score_files.split(source, 4)
    assert rows == n and len(parts) == 4
    groups = sorted(g for part in parts for (_, gs) in part for g in gs)
    assert groups == list(range(10)) and sorted(len(gs) for part in parts for _, gs in part) == [2, 2, 3, 3]


def test_committed_files_outside_the_replaced_partition_are_refused_and_the_table_is_unchanged(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from lakeloop.delta.files import staged_file
    from lakeloop.delta.log import ReplaceWhereViolation, locate
    from lakeloop.delta.write import commit_files

    uri = str(tmp_path / "t")
    tables.write(spark.createDataFrame([(1, "2026-03-10")], "k long, dt string"), uri, partition_by=["dt"])
    loc = locate(uri)
    (tmp_path / "t" / "dt=2026-03-09").mkdir()
    pq.write_table(pa.table({"k": pa.array([2], pa.int64())}), str(tmp_path / "t" / "dt=2026-03-09" / "x.parquet"))
    staged = staged_file(loc, loc.fs.get_file_info(loc.fs_join("dt=2026-03-09/x.parquet")), {"dt": "2026-03-09"})
    assert staged.path == "dt=2026-03-09/x.parquet" and staged.num_records == 1
    schema = spark.createDataFrame([], "k long, dt string").schema
    with pytest.raises(ReplaceWhereViolation, match="outside replace_where"):
        commit_files(spark, uri, [staged], schema, mode="overwrite", partition_by=["dt"],
                     replace_where="dt = '2026-03-10'")
    assert tables.version(uri) == 0
    result = commit_files(spark, uri, [staged], schema, mode="overwrite", partition_by=["dt"],
                          replace_where="dt = '2026-03-09'")
    assert result.version == 1 and result.rows == 1
    with pytest.raises(ReplaceWhereViolation, match="outside the replaced partition"):
        commit_files(spark, uri, [staged], schema, mode="overwrite", partition_by=["dt"],
                     replace_partition={"dt": "2026-03-10"})
    pq.write_table(pa.table({"k": pa.array([2], pa.int64())}), str(tmp_path / "t" / "dt=2026-03-09" / "y.parquet"))
    newer = staged_file(loc, loc.fs.get_file_info(loc.fs_join("dt=2026-03-09/y.parquet")), {"dt": "2026-03-09"})
    again = commit_files(spark, uri, [newer], schema, mode="overwrite", partition_by=["dt"],
                         replace_partition={"dt": "2026-03-09"})  # x.parquet removed, y.parquet added
    assert again.version == 2 and again.rows == 1
    assertDataFrameEqual(tables.read(spark, uri), spark.createDataFrame([(1, "2026-03-10"), (2, "2026-03-09")],
                                                                        "k long, dt string"))
