"""lakeloop.tables: killed writers, vacuum, concurrency, merge/history/optimize/restore, foreign tables."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from lakeloop import tables
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {lib!r})
    from pyspark.sql import SparkSession
    from lakeloop import tables
    from lakeloop.delta import write as w
    spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    how = sys.argv[2]
    if how == "before_commit":
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        w._commit = die
    df = spark.range(0, 2000, numPartitions=4).selectExpr("id", "cast(id % 2 as string) as p")
    if how == "in_tasks":
        from pyspark.sql import functions as F
        slow = F.udf(lambda i: (time.sleep(0.01), i)[1], "long")
        df = df.withColumn("id", slow("id"))
    print("writing", flush=True)
    tables.write(df, sys.argv[1], partition_by=["p"])
    print("committed", flush=True)
""")


def _data_files(table_dir: Path) -> set[str]:
    return {str(p.relative_to(table_dir)) for p in table_dir.rglob("*") if p.is_file()
            and not str(p.relative_to(table_dir)).startswith("_delta_log")}


@pytest.mark.slow  # two Spark start-ups in a subprocess: ~60 s on a shared machine
@pytest.mark.parametrize("how", ["before_commit", "in_tasks"])
def test_killed_writer_leaves_table_readable_and_vacuum_removes_orphans(spark, tmp_path, how):
    table_dir = tmp_path / "t"
    uri = str(table_dir)
    tables.write(spark.createDataFrame([(1, "0")], "id long, p string"), uri, partition_by=["p"])
    committed = _data_files(table_dir)
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(lib=str(ROOT / "lib")))
    proc = subprocess.Popen([sys.executable, str(script), uri, how], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if how == "in_tasks":  # kill -9 once the tasks have started writing files
            deadline = time.time() + 500  # a loaded machine takes minutes to start Spark
            while time.time() < deadline and not any(p.suffix == ".parquet" for p in table_dir.rglob("*")
                                                      if "_temporary" in str(p)):
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)
            assert time.time() < deadline, "the writer never started writing files"
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(1)  # let the killed JVM finish dying before looking at its files
    orphans = _data_files(table_dir) - committed
    assert any(o.endswith(".parquet") for o in orphans), orphans
    assert tables.version(uri) == 0
    assert tables.read(spark, uri).collect() == [Row(id=1, p="0")]
    assert tables.vacuum(uri, retention_hours=24) == []  # too young to be removed
    removed = tables.vacuum(uri, retention_hours=0)
    assert set(removed) >= {o for o in orphans if o.endswith(".parquet")}
    assert _data_files(table_dir) == committed
    # no staging folders left behind, empty or not
    assert sorted(p.name for p in table_dir.iterdir()) == ["_delta_log", "p=0"]
    assert tables.read(spark, uri).collect() == [Row(id=1, p="0")]


def test_vacuum_keeps_files_of_versions_within_retention(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(spark.range(3), uri)
    tables.write(spark.range(5), uri, mode="overwrite")
    assert tables.vacuum(uri) == []  # default retention (168 h) keeps version 0's files
    assert tables.read(spark, uri, version=0).count() == 3
    live = _data_files(tmp_path / "t")
    removed = tables.vacuum(uri, retention_hours=0, dry_run=True)
    assert {p for p in removed if p.endswith(".parquet")} == {
        p for p in live if p.endswith(".parquet") and "/." not in p} - _current_files(uri)
    assert _data_files(tmp_path / "t") == live
    assert tables.read(spark, uri, version=0).count() == 3  # dry run deleted nothing
    tables.vacuum(uri, retention_hours=0)
    assert tables.read(spark, uri).count() == 5


def _current_files(uri):
    from urllib.parse import unquote

    from deltalake import DeltaTable

    return {unquote(p) for p in pa.table(DeltaTable(uri).get_add_actions()).column("path").to_pylist()}


def test_concurrent_appends_both_land(spark, tmp_path):
    uri = str(tmp_path / "t")
    tables.write(spark.range(1), uri)
    results, errors = [], []

    def append(start):
        try:
            results.append(tables.write(spark.range(start, start + 100), uri))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(s,)) for s in (1000, 2000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.version for r in results) == [1, 2]
    assert tables.read(spark, uri).count() == 201


def _gated(spark, gate: Path, rows):
    """A frame whose write blocks until ``gate`` exists (so another commit can land meanwhile)."""
    def wait(x):
        while not os.path.exists(str(gate)):
            time.sleep(0.05)
        return x

    udf = F.udf(wait, "string")
    return spark.createDataFrame(rows, "id long, dt string").coalesce(1).withColumn("dt", udf("dt"))


@pytest.mark.parametrize("other_day, conflicts", [("2026-11-01", True), ("2026-11-02", False)])
def test_overwrite_conflicting_with_concurrent_append(spark, tmp_path, other_day, conflicts):
    uri = str(tmp_path / "t")
    gate = tmp_path / "gate"
    tables.write(spark.createDataFrame([(1, "2026-11-01"), (2, "2026-11-02")], "id long, dt string"), uri,
                 partition_by=["dt"])
    outcome = {}

    def overwrite():
        try:
            outcome["result"] = tables.write(_gated(spark, gate, [(10, "2026-11-01")]), uri, mode="overwrite",
                                             replace_where="dt = '2026-11-01'")
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = exc

    t = threading.Thread(target=overwrite)
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "t").glob("w-*")):
        time.sleep(0.05)
    tables.write(spark.createDataFrame([(3, other_day)], "id long, dt string"), uri)
    gate.touch()
    t.join(120)
    ids = sorted(r.id for r in tables.read(spark, uri).collect())
    if conflicts:
        assert isinstance(outcome.get("error"), tables.ConcurrentWriteError), outcome
        assert "retry" in str(outcome["error"])
        assert ids == [1, 2, 3] and tables.version(uri) == 1
    else:
        assert "error" not in outcome, outcome
        assert ids == [2, 3, 10]


def test_merge_upserts_and_deletes_by_key(spark, tmp_path):
    uri = str(tmp_path / "t")
    base = spark.createDataFrame([(1, "a", 1.0), (2, "b", 2.0), (3, "c", 3.0)], "id long, name string, score double")
    tables.write(base, uri)
    changes = spark.createDataFrame([(2, "B", 20.0, "U"), (3, None, None, "D"), (4, "d", 4.0, "I"), (5, "e", 5.0, "D")],
                                    "id long, name string, score double, op string")
    result = tables.merge(spark, uri, changes, ["id"], delete_when="s.op = 'D'")
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 1)
    assert tables.read(spark, uri).columns == ["id", "name", "score"]
    assertDataFrameEqual(tables.read(spark, uri), [Row(id=1, name="a", score=1.0), Row(id=2, name="B", score=20.0),
                                                   Row(id=4, name="d", score=4.0)])
    with pytest.raises(tables.SchemaMismatchError, match="column score: table has double, data has string"):
        tables.merge(spark, uri, spark.createDataFrame([(1, "x")], "id long, score string"), ["id"])
    partial = tables.merge(spark, uri, spark.createDataFrame([(1, 9.0), (6, 6.0)], "id long, score double"), ["id"])
    assert (partial.inserted, partial.updated) == (1, 1)
    assertDataFrameEqual(tables.read(spark, uri), [Row(id=1, name="a", score=9.0), Row(id=2, name="B", score=20.0),
                                                   Row(id=4, name="d", score=4.0), Row(id=6, name=None, score=6.0)])
    deletes = spark.createDataFrame([(1, "x", 0.0), (9, "z", 9.0)], "id long, name string, score double")
    result = tables.merge(spark, uri, deletes, ["id"], delete_when="s.name = 'x' OR s.id = 9")
    assert result.deleted == 1 and result.inserted == 0
    assert sorted(r.id for r in tables.read(spark, uri).collect()) == [2, 4, 6]
    dup = spark.createDataFrame([(7, "a", 1.0), (7, "b", 2.0)], "id long, name string, score double")
    with pytest.raises(tables.DeltaError, match="duplicate key"):
        tables.merge(spark, uri, dup, ["id"])
    assert tables.history(uri, limit=1)[0]["operation"] == "MERGE"


def test_merge_into_non_nullable_spark_columns(spark, tmp_path):
    # spark.range's id is NOT NULL in Spark; delta-rs would reject later merges if the table kept that
    uri = str(tmp_path / "t")
    tables.write(spark.range(3).withColumn("v", F.lit("x")), uri)
    tables.merge(spark, uri, spark.createDataFrame([(5, None)], "id long, v string"), ["id"])
    assert tables.read(spark, uri).count() == 4


def test_history_optimize_restore(spark, tmp_path):
    uri = str(tmp_path / "t")
    for day in ("2026-11-01", "2026-11-01", "2026-11-02"):
        tables.write(spark.createDataFrame([(1, day), (2, day)], "id long, dt string").repartition(2), uri,
                     partition_by=["dt"])
    before = tables.read(spark, uri).collect()
    metrics = tables.optimize(uri, partition_filters=[("dt", "=", "2026-11-01")])
    assert metrics["numFilesRemoved"] >= 2 and metrics["numFilesAdded"] == 1
    assertDataFrameEqual(tables.read(spark, uri), before)
    tables.optimize(uri, z_order=["id"])
    assertDataFrameEqual(tables.read(spark, uri), before)
    ops = [h["operation"] for h in tables.history(uri)]
    assert ops[0] == "OPTIMIZE" and ops.count("WRITE") + ops.count("CREATE TABLE") == 3
    tables.restore(uri, 0)
    assert tables.read(spark, uri).count() == 2
    assert tables.history(uri, limit=1)[0]["operation"] == "RESTORE"
    tables.write(spark.createDataFrame([(3, "2026-11-03")], "id long, dt string"), uri)  # still writable
    assert tables.read(spark, uri).count() == 3


def test_reads_tables_written_by_delta_rs_with_checkpoints(spark, tmp_path):
    from deltalake import DeltaTable, write_deltalake

    uri = str(tmp_path / "t")
    expected = []
    for i in range(12):
        batch = pa.table({"id": pa.array([i * 10, i * 10 + 1], pa.int64()),
                          "d": pa.array([dt.date(2026, 11, 1 + i % 3)] * 2),
                          "n": pa.array([i % 2, None], pa.int32()),
                          "ts": pa.array([dt.datetime(2026, 11, 1, i, tzinfo=dt.UTC)] * 2,
                                         pa.timestamp("us", "UTC"))})
        write_deltalake(uri, batch, mode="append", partition_by=["d", "n"],
                        configuration={"delta.checkpointInterval": "5"})
        expected += batch.to_pylist()
    DeltaTable(uri).create_checkpoint()
    assert list((tmp_path / "t" / "_delta_log").glob("*.checkpoint.parquet"))
    got = tables.read(spark, uri)
    assert got.columns == ["id", "d", "n", "ts"]
    assert dict((f.name, f.dataType.simpleString()) for f in got.schema.fields) == {
        "id": "bigint", "d": "date", "n": "int", "ts": "timestamp"}
    rows = sorted((r.id, r.d, r.n, r.ts.replace(tzinfo=dt.UTC)) for r in got.collect())
    assert rows == sorted((e["id"], e["d"], e["n"], e["ts"]) for e in expected)
    assert tables.read(spark, uri, where="n IS NULL").count() == 12
    # and we can keep writing to it
    tables.write(spark.createDataFrame([(999, dt.date(2026, 11, 9), 1, dt.datetime(2026, 1, 1))],
                                       "id long, d date, n int, ts timestamp"), uri)
    assert tables.read(spark, uri, where="d = '2026-11-09'").count() == 1


def test_partition_values_come_from_the_log_not_the_folders(spark, tmp_path):
    """Files of another writer need not live under k=v folders."""
    import pyarrow.parquet as pq
    from deltalake import Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    root = tmp_path / "t"
    (root / "data").mkdir(parents=True)
    adds = []
    for i, day in enumerate(["2026-11-01", "2026-11-02"]):
        path = root / "data" / f"f{i}.parquet"
        pq.write_table(pa.table({"id": pa.array([i], pa.int64())}), path)
        adds.append(AddAction(f"data/f{i}.parquet", path.stat().st_size, {"dt": day}, int(time.time() * 1000),
                              True, None))
    schema = Schema.from_json('{"type":"struct","fields":[{"name":"id","type":"long","nullable":true,"metadata":{}},'
                              '{"name":"dt","type":"date","nullable":true,"metadata":{}}]}')
    create_table_with_add_actions(str(root), schema, adds, partition_by=["dt"])
    got = tables.read(spark, str(root))
    assertDataFrameEqual(got, [Row(id=0, dt=dt.date(2026, 11, 1)), Row(id=1, dt=dt.date(2026, 11, 2))])


def test_unsupported_features_are_named(spark, tmp_path):
    from deltalake import DeltaTable, TableFeatures, write_deltalake

    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"x": [1]}))
    DeltaTable(uri).alter.add_feature(TableFeatures.DeletionVectors, allow_protocol_versions_increase=True)
    with pytest.raises(tables.UnsupportedFeatureError, match="deletionVectors"):
        tables.read(spark, uri)
    with pytest.raises(tables.UnsupportedFeatureError, match="deletionVectors"):
        tables.write(spark.createDataFrame([(2,)], "x long"), uri)


def test_lake_takes_retention_and_storage_options_from_conf(spark, tmp_path, conf):
    from lakeloop.lake import Lake

    uri = conf.table_uri("silver.t")
    tables.write(spark.range(3), uri)
    tables.write(spark.range(4), uri, mode="overwrite")
    lake = Lake.from_conf(conf.with_overrides({"delta.vacuum_retention_hours": 0,
                                               "delta.storage_options": {"timeout": "120s"}}))
    assert lake.storage_options == {"timeout": "120s"}
    assert any(p.endswith(".parquet") for p in lake.vacuum(uri))  # retention 0 from conf
    assert lake.read(spark, uri).count() == 4
    default = Lake.from_conf(conf)  # no module-global state: another lake keeps its own settings
    assert default.vacuum_retention_hours == 168 and default.storage_options == {}
