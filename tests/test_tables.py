"""lakeloop.tables: round trips, time travel, replace_where, txn idempotency, schema enforcement."""

from __future__ import annotations

import datetime as dt
import json
import time
from decimal import Decimal

import pytest
from lakeloop import tables
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

UTC = dt.UTC

RICH_SCHEMA = T.StructType([
    T.StructField("id", T.LongType(), False),
    T.StructField("amount", T.DecimalType(18, 4)),
    T.StructField("ts", T.TimestampType()),
    T.StructField("day", T.DateType()),
    T.StructField("tags", T.ArrayType(T.StringType())),
    T.StructField("favs", T.ArrayType(T.StructType([T.StructField("item", T.IntegerType()),
                                                    T.StructField("score", T.DoubleType())]))),
    T.StructField("attrs", T.MapType(T.StringType(), T.LongType())),
    T.StructField("name", T.StringType()),
    T.StructField("dt", T.StringType()),
])


def rich_rows():
    return [
        (1, Decimal("12345678901234.5678"), dt.datetime(2026, 11, 1, 23, 59, 59, 123456, tzinfo=UTC),
         dt.date(2026, 11, 1), ["a", None], [(1, 0.5), (2, None)], {"k": 1}, "é ü", "2026-11-01"),
        (2, None, None, None, None, None, None, None, "2026-11-02"),
        (3, Decimal("-1.0000"), dt.datetime(1999, 1, 1, tzinfo=UTC), dt.date(1970, 1, 1), [], [], {},
         "x" * 100, "2026-11-02"),
    ]


@pytest.fixture
def rich(spark):
    return spark.createDataFrame(rich_rows(), RICH_SCHEMA)


@pytest.mark.parametrize("partition_by", [None, ["dt"]])
def test_round_trip_of_all_types(spark, tmp_path, rich, partition_by):
    uri = str(tmp_path / "t")
    result = tables.write(rich, uri, partition_by=partition_by)
    assert (result.version, result.rows, result.skipped) == (0, 3, False)
    back = tables.read(spark, uri)
    assert back.columns == rich.columns
    assert [f.dataType for f in back.schema.fields] == [f.dataType for f in RICH_SCHEMA.fields]
    assertDataFrameEqual(back, rich)
    # delta-spark makes every column nullable, even spark's non-nullable ones
    schema = json.loads(_log(tmp_path / "t", 0)["metaData"]["schemaString"])
    assert all(f["nullable"] for f in schema["fields"])


def _log(table_dir, version):
    out = {}
    for line in (table_dir / "_delta_log" / f"{version:020d}.json").read_text().splitlines():
        action = json.loads(line)
        for k, v in action.items():
            out.setdefault(k, v) if k != "add" else out.setdefault("adds", []).append(v)
    return out


def test_add_actions_carry_partition_values_and_stats(spark, tmp_path, rich):
    uri = str(tmp_path / "t")
    tables.write(rich.coalesce(1), uri, partition_by=["dt"])
    adds = _log(tmp_path / "t", 0)["adds"]
    by_dt = {a["partitionValues"]["dt"]: json.loads(a["stats"]) for a in adds}
    assert set(by_dt) == {"2026-11-01", "2026-11-02"}
    s = by_dt["2026-11-02"]
    assert s["numRecords"] == 2
    assert (s["minValues"]["id"], s["maxValues"]["id"]) == (2, 3)
    assert s["nullCount"]["ts"] == 1
    assert s["minValues"]["ts"] == "1999-01-01T00:00:00.000Z"
    # a truncated string can be a lower bound, never an upper bound
    assert s["minValues"]["name"] == "x" * 32 and "name" not in s["maxValues"]
    first = by_dt["2026-11-01"]
    assert first["maxValues"]["ts"] == "2026-11-01T23:59:59.124Z"  # rounded up to whole ms
    assert first["minValues"]["ts"] == "2026-11-01T23:59:59.123Z"
    assert all(not a["path"].startswith(("_", ".")) for a in adds)


def test_empty_table_reads_with_schema(spark, tmp_path, rich):
    uri = str(tmp_path / "t")
    tables.write(rich.limit(0), uri, partition_by=["dt"])
    back = tables.read(spark, uri)
    assert back.count() == 0
    assert [f.dataType for f in back.schema.fields] == [f.dataType for f in RICH_SCHEMA.fields]
    assert tables.version(uri) == 0 and tables.exists(uri)


def test_exists_and_version_without_table(tmp_path):
    assert not tables.exists(str(tmp_path / "none"))
    assert tables.version(str(tmp_path / "none")) is None


def test_file_uri_and_typed_partitions(spark, tmp_path):
    uri = "file://" + str(tmp_path / "t")
    df = spark.createDataFrame(
        [(1, dt.date(2026, 11, 1), 7, dt.datetime(2026, 11, 1, 10, 30, tzinfo=UTC), "a:b c%d/é"),
         (2, None, None, None, None)],
        "v long, d date, n int, ts timestamp, s string")
    tables.write(df, uri, partition_by=["d", "n", "ts", "s"])
    back = tables.read(spark, uri)
    assert back.schema == T.StructType([T.StructField(c, t) for c, t in
                                        [("v", T.LongType()), ("d", T.DateType()), ("n", T.IntegerType()),
                                         ("ts", T.TimestampType()), ("s", T.StringType())]])
    assertDataFrameEqual(back, df)
    assertDataFrameEqual(tables.read(spark, uri, where="n = 7").select("v"), [Row(v=1)])


def test_time_travel_by_version_and_timestamp(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(spark.range(3), uri)
    time.sleep(0.05)
    between = dt.datetime.now(UTC)
    time.sleep(0.05)
    tables.write(spark.range(3, 5), uri)
    tables.write(spark.range(100, 101), uri, mode="overwrite")
    assert tables.read(spark, uri).collect() == [Row(id=100)]
    assert tables.read(spark, uri, version=0).count() == 3
    assert tables.read(spark, uri, version=1).count() == 5
    assert tables.read(spark, uri, timestamp=between).count() == 3
    assert tables.version(uri) == 2
    with pytest.raises(tables.DeltaError):
        tables.read(spark, uri, version=9)


def _daily(spark, day, ids):
    return spark.createDataFrame([(i, day, f"v{i}") for i in ids], "id long, dt string, v string")


def test_replace_where_replaces_only_its_partition(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(_daily(spark, "2026-11-01", [1, 2]).union(_daily(spark, "2026-11-02", [3])), uri,
                 partition_by=["dt"])
    for _ in range(2):  # a re-run of the same day replaces, never duplicates
        r = tables.write(_daily(spark, "2026-11-01", [10, 11, 12]), uri, mode="overwrite",
                         replace_where="dt = '2026-11-01'")
        assert r.rows == 3
    got = tables.read(spark, uri)
    assert sorted(r.id for r in got.collect()) == [3, 10, 11, 12]


def test_replace_where_is_enforced(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(_daily(spark, "2026-11-01", [1]), uri, partition_by=["dt"])
    bad = _daily(spark, "2026-11-01", [5]).union(_daily(spark, "2026-11-03", [6]))
    with pytest.raises(tables.ReplaceWhereViolation, match="outside replace_where.*2026-11-03"):
        tables.write(bad, uri, mode="overwrite", replace_where="dt = '2026-11-01'")
    assert tables.version(uri) == 0
    assert [r.id for r in tables.read(spark, uri).collect()] == [1]
    # nothing of the failed write is left in the table folder but the committed file
    parquet = [p for p in (tmp_path / "t").rglob("*.parquet")]
    assert len(parquet) == 1
    with pytest.raises(ValueError, match="not a valid predicate"):
        tables.write(_daily(spark, "2026-11-01", [5]), uri, mode="overwrite", replace_where="nope > 3")
    with pytest.raises(ValueError, match="mode='overwrite'"):
        tables.write(_daily(spark, "2026-11-01", [5]), uri, replace_where="dt = '2026-11-01'")


def test_replace_where_on_data_columns_rewrites_files(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(_daily(spark, "2026-11-01", range(10)).coalesce(1), uri, partition_by=["dt"])
    tables.write(_daily(spark, "2026-11-02", range(100, 103)).coalesce(1), uri)
    r = tables.write(_daily(spark, "2026-11-01", [7, 8]), uri, mode="overwrite", replace_where="id >= 5 AND id < 50")
    assert not r.skipped
    got = sorted(r.id for r in tables.read(spark, uri).collect())
    assert got == [0, 1, 2, 3, 4, 7, 8, 100, 101, 102]
    # the file of 2026-11-02 cannot hold matching rows (stats): it was not rewritten
    removed = [h for h in tables.history(uri, limit=1)]
    assert removed[0]["lakeloop.replaceWhere"] == "id >= 5 AND id < 50"
    assert len(tables.read(spark, uri, where="dt = '2026-11-02'").inputFiles()) == 1
    assert set(tables.read(spark, uri, where="dt = '2026-11-02'").inputFiles()) == set(
        tables.read(spark, uri, version=1, where="dt = '2026-11-02'").inputFiles())
    with pytest.raises(tables.ReplaceWhereViolation):
        tables.write(_daily(spark, "2026-11-01", [60]), uri, mode="overwrite", replace_where="id < 50")


def test_txn_is_idempotent(spark, tmp_path):
    uri = str(tmp_path / "t")
    first = tables.write(spark.range(5), uri, txn=("ingest-events", 7))
    again = tables.write(spark.range(5), uri, txn=("ingest-events", 7))
    older = tables.write(spark.range(5), uri, txn=("ingest-events", 3))
    assert (first.skipped, again.skipped, older.skipped) == (False, True, True)
    assert again.version == first.version == 0
    nxt = tables.write(spark.range(5), uri, txn=("ingest-events", 8))
    other = tables.write(spark.range(5), uri, txn=("other-app", 1))
    assert not nxt.skipped and not other.skipped
    assert tables.read(spark, uri).count() == 15
    from deltalake import DeltaTable

    assert DeltaTable(uri).transaction_version("ingest-events") == 8


def test_schema_enforcement(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(spark.createDataFrame([(1, "a")], "id long, name string"), uri)
    with pytest.raises(tables.SchemaMismatchError, match=r"column id: table has bigint, data has string"):
        tables.write(spark.createDataFrame([("1", "a")], "id string, name string"), uri)
    with pytest.raises(tables.SchemaMismatchError, match=r"column extra \(int\) is not in the table schema"):
        tables.write(spark.createDataFrame([(1, "a", 3)], "id long, name string, extra int"), uri)
    with pytest.raises(tables.SchemaMismatchError, match="partition_by"):
        tables.write(spark.createDataFrame([(1, "a")], "id long, name string"), uri, partition_by=["name"])
    # missing columns are written as nulls, column order does not matter
    tables.write(spark.createDataFrame([(2,)], "id long"), uri)
    tables.write(spark.createDataFrame([("c", 3)], "name string, id long"), uri)
    assertDataFrameEqual(tables.read(spark, uri), [Row(id=1, name="a"), Row(id=2, name=None), Row(id=3, name="c")])
    assert tables.version(uri) == 2


def test_merge_schema_adds_columns(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(spark.createDataFrame([(1, "a")], "id long, name string"), uri)
    tables.write(spark.createDataFrame([(2, "b", 2.5)], "id long, name string, score double"), uri,
                 merge_schema=True)
    back = tables.read(spark, uri)
    assert back.schema["score"].dataType == T.DoubleType()
    assertDataFrameEqual(back, [Row(id=1, name="a", score=None), Row(id=2, name="b", score=2.5)])


def test_timestamp_ntz_is_written_as_utc_timestamp(spark, tmp_path):
    uri = str(tmp_path / "t")
    df = spark.createDataFrame([(dt.datetime(2026, 11, 1, 8, 0),)], "t timestamp_ntz")
    tables.write(df, uri)
    back = tables.read(spark, uri)
    assert back.schema["t"].dataType == T.TimestampType()
    assert back.collect()[0].t == dt.datetime(2026, 11, 1, 8, 0)  # session time zone is UTC
    log = _log(tmp_path / "t", 0)
    assert "timestamp_ntz" not in log["metaData"]["schemaString"]
    assert log["protocol"] == {"minReaderVersion": 1, "minWriterVersion": 2}


def test_read_prunes_files_by_partition_and_stats(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(_daily(spark, "2026-11-01", [1, 2]).coalesce(1), uri, partition_by=["dt"])
    tables.write(_daily(spark, "2026-11-02", [3, 4]).coalesce(1), uri)
    tables.write(_daily(spark, "2026-11-02", [50, 60]).coalesce(1), uri)

    def files(frame):
        return {r.f for r in frame.select(F.input_file_name().alias("f")).distinct().collect()}

    assert len(files(tables.read(spark, uri))) == 3
    one_day = tables.read(spark, uri, where="dt = '2026-11-01'")
    assert len(files(one_day)) == 1 and one_day.count() == 2
    by_stats = tables.read(spark, uri, where="id >= 50")
    assert len(files(by_stats)) == 1 and sorted(r.id for r in by_stats.collect()) == [50, 60]
    tuples = tables.read(spark, uri, filters=[("dt", "=", "2026-11-02")])
    assert tuples.count() == 4


def test_overwrite_without_predicate_replaces_everything(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(_daily(spark, "2026-11-01", [1, 2]), uri, partition_by=["dt"])
    tables.write(_daily(spark, "2026-11-05", [9]), uri, mode="overwrite")
    assert [r.id for r in tables.read(spark, uri).collect()] == [9]
    assert [r.id for r in tables.read(spark, uri, version=0).orderBy("id").collect()] == [1, 2]
