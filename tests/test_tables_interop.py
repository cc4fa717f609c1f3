"""Tables written by lakeloop.tables read by other engines: delta-rs, polars, duckdb."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from lakeloop import tables

UTC = dt.UTC
ROWS = [
    (1, "2026-11-01", dt.datetime(2026, 11, 1, 10, 30, 0, 123000, tzinfo=UTC), Decimal("10.25"), ["a"], None),
    (2, "2026-11-01", None, None, None, "x"),
    (3, "2026-11-02", dt.datetime(2026, 11, 2, tzinfo=UTC), Decimal("-3.50"), [], "y"),
]
SCHEMA = "id long, dt string, ts timestamp, amount decimal(12,2), tags array<string>, note string"


@pytest.fixture(scope="module")
def table(spark, tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("interop") / "t")
    tables.write(spark.createDataFrame(ROWS[:2], SCHEMA), uri, partition_by=["dt"])
    tables.write(spark.createDataFrame(ROWS[2:], SCHEMA), uri)
    tables.write(spark.createDataFrame([(9, "2026-11-03", None, None, None, None)], SCHEMA), uri)
    tables.write(spark.createDataFrame(ROWS[2:], SCHEMA), uri, mode="overwrite", replace_where="dt >= '2026-11-02'")
    return uri


def _expected():
    return sorted((r[0], r[1], r[2], r[3], r[4], r[5]) for r in ROWS)


def _normalise(rows):
    out = []
    for r in rows:
        ts = r["ts"]
        if ts is not None and ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        out.append((r["id"], r["dt"], ts, r["amount"], r["tags"], r["note"]))
    return sorted(out)


def test_delta_rs_reads_it(table):
    from deltalake import DeltaTable

    t = DeltaTable(table)
    assert t.protocol().min_reader_version == 1 and t.protocol().min_writer_version == 2
    arrow = t.to_pyarrow_table()
    assert arrow.schema.field("ts").type == pa.timestamp("us", "UTC")
    assert _normalise(arrow.to_pylist()) == _expected()


def test_polars_reads_it(table):
    import polars as pl

    frame = pl.read_delta(table)
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert _normalise(frame.to_dicts()) == _expected()


def test_duckdb_reads_the_snapshot_files(table):
    """duckdb's delta extension is downloaded on first use (no network here): read the snapshot's
    parquet files, listed by delta-rs, with hive partitioning instead."""
    import duckdb
    from deltalake import DeltaTable

    files = DeltaTable(table).file_uris()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    rel = con.execute("SELECT id, dt, ts, amount, tags, note FROM read_parquet(?, hive_partitioning = true, "
                      "hive_types = {'dt': 'VARCHAR'})",
                      [files])
    names = [d[0] for d in rel.description]
    rows = [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
    assert _normalise(rows) == _expected()
