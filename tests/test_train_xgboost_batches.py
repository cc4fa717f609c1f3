"""xgboost backend: partitions larger than one Arrow batch, with the holdout rows after the training rows."""

from __future__ import annotations

from lakeloop.train.base import TrainingData
from lakeloop.train.xgboost import BACKEND


def test_fit_when_a_partition_spans_batches_without_holdout_rows(spark):
    from pyspark.sql import functions as F

    frame = (spark.range(24_000).withColumn("x", (F.col("id") % 97).cast("double"))
             .withColumn("y", F.rand(3)).withColumn("label", (F.col("x") > 48).cast("int")))
    train, valid = frame.where("id < 20000").coalesce(1), frame.where("id >= 20000").coalesce(1)
    data = TrainingData(train=train, valid=valid, features=["x", "y"])
    before = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1000")  # 20 train-only batches first
    try:
        fit = BACKEND.fit(spark, data, {"n_estimators": 5, "max_depth": 2, "eval_metric": ["auc"], "num_workers": 1})
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", before)
    assert len(fit.history["validation-auc"]) == 5 and fit.history["validation-auc"][-1] > 0.99
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == before  # restored
