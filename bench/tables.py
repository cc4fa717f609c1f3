"""Benchmark: lakeloop.tables (Delta over delta-rs) against plain Spark parquet, in one run.

    .venv/bin/python bench/tables.py --rows 1000000 10000000 --repeat 3

For each size it writes the same generated frame (10 ``dt`` partitions) with
``df.write.partitionBy("dt").parquet(dir)`` and with ``tables.write(df, uri, partition_by=["dt"])``,
then reads each back and aggregates by ``dt`` (``--reads`` times per table, the engines interleaved;
``first_read`` is the first read of each freshly written table alone).
Runs alternate between the two engines; the printed ratio is median(lakeloop) / median(plain).
Targets: write <= 1.1x, read <= 1.2x.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from lakeloop import tables  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402


def frame(spark: SparkSession, rows: int) -> DataFrame:
    return spark.range(rows, numPartitions=8).selectExpr(
        "id", "date_format(date_add(date'2026-11-01', cast(id % 10 as int)), 'yyyy-MM-dd') as dt",
        "rand(7) * 100 as value", "concat('user-', id % 5000) as user",
        "timestamp_seconds(1795000000 + id) as ts")


def aggregate(df: DataFrame) -> list:
    return df.groupBy("dt").agg(F.count("*").alias("n"), F.sum("value").alias("s"),
                                F.countDistinct("user").alias("u")).collect()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_size(spark: SparkSession, rows: int, repeat: int, root: Path, reads: int = 3) -> dict[str, float]:
    df = frame(spark, rows)
    times: dict[str, list[float]] = {f"{kind}_{op}": [] for kind in ("plain", "delta")
                                     for op in ("write", "read", "first_read")}
    for i in range(repeat):
        plain, delta = root / f"plain-{rows}-{i}", root / f"delta-{rows}-{i}"
        order = [("plain", plain), ("delta", delta)] if i % 2 == 0 else [("delta", delta), ("plain", plain)]
        for kind, path in order:
            if kind == "plain":
                times["plain_write"].append(timed(lambda p=path: df.write.partitionBy("dt").parquet(str(p))))
            else:
                times["delta_write"].append(timed(lambda p=path: tables.write(df, str(p), partition_by=["dt"])))
        for r in range(reads):  # reads are short and noisy: several per table, interleaved
            for kind, path in order:
                if kind == "plain":
                    took = timed(lambda p=path: aggregate(spark.read.parquet(str(p))))
                else:
                    took = timed(lambda p=path: aggregate(tables.read(spark, str(p))))
                times[f"{kind}_read"].append(took)
                if r == 0:  # the first read of a freshly written table, as a daily job does
                    times[f"{kind}_first_read"].append(took)
        check_p = sorted(aggregate(spark.read.parquet(str(plain))))
        check_d = sorted(aggregate(tables.read(spark, str(delta))))
        assert [(str(r.dt), r.n) for r in check_p] == [(str(r.dt), r.n) for r in check_d], "results differ"
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--reads", type=int, default=3, help="reads of each table per repeat")
    p.add_argument("--master", default="local[2]")
    args = p.parse_args(argv)
    spark = (SparkSession.builder.master(args.master).appName("bench-tables")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.memory", "4g").config("spark.sql.shuffle.partitions", "8").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    root = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    try:
        warm = frame(spark, 10_000)  # warm up the JVM on both code paths before timing
        warm.write.partitionBy("dt").parquet(str(root / "warm-plain"))
        tables.write(warm, str(root / "warm-delta"), partition_by=["dt"])
        aggregate(spark.read.parquet(str(root / "warm-plain")))
        aggregate(tables.read(spark, str(root / "warm-delta")))
        print(f"{'rows':>11} {'op':<10} {'plain s':>8} {'lakeloop s':>10} {'ratio':>6} target")
        for rows in args.rows:
            t = bench_size(spark, rows, args.repeat, root, args.reads)
            for op, target in (("write", 1.1), ("read", 1.2), ("first_read", 1.2)):
                plain, delta = t[f"plain_{op}"], t[f"delta_{op}"]
                print(f"{rows:>11,} {op:<10} {plain:>8.2f} {delta:>10.2f} {delta / plain:>6.2f} <= {target}",
                      flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
