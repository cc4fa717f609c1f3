"""The optimize job: compaction of a day's small files and vacuum keep every row and the version history."""

from __future__ import annotations

from pathlib import Path

from lakeloop import cli
from lakeloop.lake import Lake
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

ROOT = Path(__file__).resolve().parents[1]


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--conf-dir", str(ROOT / "conf"), "--set", f"warehouse={tmp_path / 'warehouse'}",
            "--set", f"landing={tmp_path / 'landing'}", *extra]


def _files(lake: Lake, table: str, day: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(lake.uri(table)).file_uris(partition_filters=[("dt", "=", day)]))


def _small_files(spark, lake: Lake, table: str, day: str, appends: int = 6) -> None:
    for i in range(appends):  # one small file per micro-batch-sized append
        frame = spark.range(i * 100, (i + 1) * 100, numPartitions=1).withColumn("dt", F.lit(day))
        lake.write(frame, table, mode="append", partition_by=["dt"])


def test_optimize_compacts_the_run_date_and_keeps_rows_and_history(spark, conf, tmp_path):
    lake = Lake.from_conf(conf)
    _small_files(spark, lake, "silver.clicks", "2026-11-01")
    _small_files(spark, lake, "silver.clicks", "2026-11-02", appends=3)
    before = lake.read(spark, "silver.clicks")
    versions = len(lake.history("silver.clicks"))
    outcome = cli.execute("optimize", ["--date", "2026-11-01", "--table", "silver.clicks", *_args(tmp_path)])
    assert outcome.exit_code == 0
    (done,) = outcome.result.value
    assert (done.partition, done.files_removed, done.files_added) == ("2026-11-01", 6, 1)
    assert _files(lake, "silver.clicks", "2026-11-01") == 1 and _files(lake, "silver.clicks", "2026-11-02") == 3
    assertDataFrameEqual(lake.read(spark, "silver.clicks"), before)
    history = lake.history("silver.clicks")
    assert len(history) > versions and "OPTIMIZE" in [h["operation"] for h in history[: len(history) - versions]]
    assert lake.read(spark, "silver.clicks", version=0).count() == 100  # time travel inside the retention


def test_optimize_every_table_then_vacuum_with_the_conf_retention(spark, conf, tmp_path):
    lake = Lake.from_conf(conf)
    _small_files(spark, lake, "bronze.raw", "2026-11-01", appends=4)
    _small_files(spark, lake, "gold.stats", "2026-11-01", appends=2)
    expected = {t: lake.read(spark, t).collect() for t in ("bronze.raw", "gold.stats")}
    args = _args(tmp_path, "--set", "delta.vacuum_retention_hours=0")
    outcome = cli.execute("optimize", ["--date", "2026-11-01", "--all-partitions", *args])
    assert outcome.exit_code == 0
    by_table = {d.table: d for d in outcome.result.value}
    assert sorted(by_table) == ["bronze.raw", "gold.stats"]
    assert by_table["bronze.raw"].vacuumed == 4 and by_table["gold.stats"].vacuumed == 2  # the compacted files
    for table, rows in expected.items():
        assertDataFrameEqual(lake.read(spark, table), rows)
        assert _files(lake, table, "2026-11-01") == 1
        assert "OPTIMIZE" in [h["operation"] for h in lake.history(table)]
