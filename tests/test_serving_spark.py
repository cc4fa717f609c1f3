"""Bulk loads from Spark executors into both serving stores (real Spark, real redis-server, real SQLite)."""

from __future__ import annotations

import uuid

import pytest
from lakeloop.serving import load_changes, load_dataframe
from pyspark.sql import functions as F


@pytest.fixture(params=["sqlite", "redis"])
def store(request, make_store):
    return make_store(request.param, namespace="spark" + uuid.uuid4().hex[:8], batch_size=64)


def test_load_dataframe_writes_from_executors_and_switches(spark, store):
    item = F.concat(F.lit("i"), (F.col("id") % 7).cast("string"))
    predictions = (spark.range(0, 1000, numPartitions=4)
                   .withColumn("top", F.array(F.struct(item.alias("item"), (F.col("id") / 1000).alias("score"))))
                   .withColumn("label", F.concat(F.lit("u"), F.col("id").cast("string"))))
    assert load_dataframe(store, predictions, "2026-11-22", "id", "top") == 1000
    assert store.current_version() == "2026-11-22"
    assert store.get(999) == [{"item": "i5", "score": 0.999}]
    assert store.get_many([0, 500]) == [[{"item": "i0", "score": 0.0}], [{"item": "i3", "score": 0.5}]]

    assert load_dataframe(store, predictions, "2026-11-23", "label", "id") == 1000  # scalar values
    assert store.get("u42") == 42 and store.versions() == ["2026-11-22", "2026-11-23"]


def test_duplicate_keys_stop_the_load_and_keep_the_served_version(spark, store):
    good = spark.range(0, 100, numPartitions=2).withColumn("v", F.col("id") * 2)
    load_dataframe(store, good, "v1", "id", "v")
    duplicated = good.union(spark.range(0, 10).withColumn("v", F.lit(-1)))
    with pytest.raises(Exception, match="100 keys, expected 110"):
        load_dataframe(store, duplicated, "v2", "id", "v")
    assert store.current_version() == "v1" and store.get(5) == 10
    assert store.load_info("v2") is None, "the failed load is aborted"


def test_an_incremental_load_writes_only_what_changed_and_equals_a_full_one(spark, store):
    def frame(n: int, changed: int):
        value = F.struct((F.col("id") * 10 + F.when(F.col("id") < changed, 1).otherwise(0)).alias("x"))
        return spark.range(0, n, numPartitions=3).withColumn("features", value)

    load_dataframe(store, frame(300, 0), "v1", "id", "features")
    counts = load_changes(store, frame(310, 20), "v2", "id", "features", base="v1")
    assert (counts.keys, counts.written, counts.copied, counts.incremental) == (310, 30, 300, True)
    assert store.current_version() == "v2"
    assert store.get_many([0, 19, 20, 309]) == [{"x": 1}, {"x": 191}, {"x": 200}, {"x": 3090}]
    # an entity of the base without a row now: the count check refuses the incremental version, a full load follows
    counts = load_changes(store, frame(200, 0), "v3", "id", "features", base="v2")
    assert (counts.keys, counts.incremental) == (200, False) and counts.written == 200
    assert store.current_version() == "v3" and store.load_info("v3").count == 200
    assert store.get_many([0, 199, 200]) == [{"x": 0}, {"x": 1990}, None]


@pytest.mark.slow
def test_null_keys_fail_the_load_with_a_clear_error(spark, store):
    frame = spark.createDataFrame([("a", 1), (None, 2)], "k string, v int")
    with pytest.raises(Exception, match="key None: expected a string or an integer"):
        load_dataframe(store, frame, "v1", "k", "v")
    assert store.current_version() is None and store.load_info("v1") is None
