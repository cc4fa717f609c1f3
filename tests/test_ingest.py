"""Ingest: landing files -> bronze with exact lineage, a file ledger and idempotent re-runs."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
from lakeloop import tables
from lakeloop.errors import EXIT_OK, EXIT_USAGE
from lakeloop.ingest import IngestError, file_key, ingest, ingest_source, read_lines
from lakeloop.schemas import SchemaError
from pyspark.sql import functions as F

DATE = "2026-11-01"


def land(conf, source: str, name: str, lines: list[str], date: str = DATE) -> Path:
    """Write ``lines`` to ``<landing>/<source>/dt=<date>/<name>`` (gzip when the name ends in .gz)."""
    folder = Path(conf.path("landing")) / source / f"dt={date}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def bronze(spark, conf, source: str):
    return tables.read(spark, conf.table_uri(f"bronze.{source}"))


def test_file_key_matches_spark_and_hadoop_renderings():
    assert file_key("file:/tmp/a%20b/c%25d.csv") == file_key("file:///tmp/a%20b/c%25d.csv") == "file:///tmp/a b/c%d.csv"


def test_line_numbers_are_exact_across_splits(spark, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(f'{{"n":{i}}}\n' for i in range(1, 3001)))
    small = tmp_path / "small.jsonl"
    small.write_text('{"n":1}\n{"n":2}\n')
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")  # ~7 splits of the big file
    try:
        lines, files = read_lines(spark, [str(path), str(small)])
        rows = lines.select(F.get_json_object("value", "$.n").cast("long").alias("n"), "_line", "_file").collect()
        splits = spark.read.text(str(path)).rdd.getNumPartitions()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    assert splits > 3
    assert len(rows) == 3002
    assert all(r["n"] == r["_line"] for r in rows)
    assert {n for _, n in files.values()} == {3000, 2}


def test_jsonl_gz_and_csv_lines_with_lineage(spark, conf):
    land(conf, "events", "part-00000.jsonl", ['{"a":1}', "not json", '{"a":3}'])
    land(conf, "events", "part-00001.jsonl.gz", ['{"g":1}', '{"g":2}'])
    land(conf, "items", "part-00000.csv", ["item_id,category", "1,a/b", '2,"c/d"'])
    land(conf, "items", "empty.csv", [])
    results = {r.source: r for r in ingest(spark, conf, DATE, ["events", "items"], batch_id="b1")}
    assert (results["events"].rows, len(results["events"].files)) == (5, 2)
    assert (results["items"].rows, len(results["items"].files)) == (2, 2)

    ev = bronze(spark, conf, "events")
    assert ev.columns == ["value", "_raw", "_file", "_line", "_ingested_at", "_batch_id", "dt"]
    got = sorted((os.path.basename(r["_file"]), r["_line"], r["value"], r["_batch_id"], r["dt"]) for r in ev.collect())
    assert got == [("part-00000.jsonl", 1, '{"a":1}', "b1", DATE), ("part-00000.jsonl", 2, "not json", "b1", DATE),
                   ("part-00000.jsonl", 3, '{"a":3}', "b1", DATE), ("part-00001.jsonl.gz", 1, '{"g":1}', "b1", DATE),
                   ("part-00001.jsonl.gz", 2, '{"g":2}', "b1", DATE)]
    assert ev.select(F.countDistinct("_ingested_at")).first()[0] == 1

    it = bronze(spark, conf, "items")
    assert it.columns == ["value", "_raw", "_header", "_file", "_line", "_ingested_at", "_batch_id", "dt"]
    assert sorted((r["value"], r["_header"], r["_line"]) for r in it.collect()) == [
        ("1,a/b", "item_id,category", 2), ('2,"c/d"', "item_id,category", 3)]

    ledger = tables.read(spark, conf.table_uri("_state.ingest_ledger")).where("source = 'items'").collect()
    by_name = {os.path.basename(r["path"]): r for r in ledger}
    assert by_name["part-00000.csv"]["rows"] == 2 and by_name["empty.csv"]["rows"] == 0
    assert by_name["part-00000.csv"]["size"] == os.path.getsize(
        Path(conf.path("landing")) / "items" / f"dt={DATE}" / "part-00000.csv")
    assert {r["batch_id"] for r in ledger} == {"b1"}


def test_rerun_writes_nothing_and_new_files_only(spark, conf):
    land(conf, "users", "part-00000.jsonl", ['{"u":1}', '{"u":2}'])
    first = ingest_source(spark, conf, "users", DATE)
    uri = conf.table_uri("bronze.users")
    version = tables.version(uri)
    again = ingest_source(spark, conf, "users", DATE)
    assert (again.rows, again.files, again.already_ingested) == (0, [], 1)
    assert tables.version(uri) == version

    land(conf, "users", "part-00001.jsonl", ['{"u":3}'])
    (Path(conf.path("landing")) / "users" / f"dt={DATE}" / "_SUCCESS").write_text("")
    land(conf, "users", "notes.txt", ["not data"])
    third = ingest_source(spark, conf, "users", DATE)
    assert third.rows == 1 and [os.path.basename(f) for f in third.files] == ["part-00001.jsonl"]
    assert [os.path.basename(f) for f in third.ignored] == ["notes.txt"]
    assert bronze(spark, conf, "users").count() == 3
    assert first.batch_id != third.batch_id


def test_changed_file_is_an_error(spark, conf):
    path = land(conf, "users", "part-00000.jsonl", ['{"u":1}'])
    ingest_source(spark, conf, "users", DATE)
    path.write_text('{"u":1}\n{"u":2}\n')
    with pytest.raises(IngestError, match=r"part-00000.jsonl changed after batch"):
        ingest_source(spark, conf, "users", DATE)


def test_empty_day_succeeds_with_no_rows(spark, conf):
    results = ingest(spark, conf, "2026-01-01")
    assert [(r.source, r.rows, r.files) for r in results] == [("events", 0, []), ("items", 0, []), ("users", 0, [])]
    assert not tables.exists(conf.table_uri("bronze.events"))


def test_stop_between_bronze_and_ledger_commit_is_recovered(spark, conf):
    land(conf, "users", "part-00000.jsonl", ['{"u":1}', '{"u":2}'])
    first = ingest_source(spark, conf, "users", DATE)
    shutil.rmtree(conf.table_uri("_state.ingest_ledger"))  # as if the ledger commit never happened
    again = ingest_source(spark, conf, "users", DATE)
    assert again.rows == 0 and len(again.recovered) == 1
    assert bronze(spark, conf, "users").count() == 2
    ledger = tables.read(spark, conf.table_uri("_state.ingest_ledger")).collect()
    assert [(r["rows"], r["batch_id"]) for r in ledger] == [(2, first.batch_id)]


def test_unknown_source_is_a_usage_error(spark, conf, tmp_path):
    with pytest.raises(SchemaError, match="unknown source 'clicks'"):
        ingest(spark, conf, DATE, ["clicks"])
    from jobs.ingest import main

    args = ["--set", f"warehouse={conf.path('warehouse')}", "--set", f"landing={conf.path('landing')}",
            "--date", DATE]
    assert main(args + ["--source", "clicks"]) == EXIT_USAGE
    land(conf, "users", "part-00000.jsonl", ['{"u":1}'])
    assert main(args + ["--source", "users"]) == EXIT_OK
    assert bronze(spark, conf, "users").count() == 1
