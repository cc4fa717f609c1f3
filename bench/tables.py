"""Benchmark: the delta-rs bridge against delta-spark and plain Spark parquet, in one run and one session.

    .venv/bin/python bench/tables.py --rows 1000000 10000000 --repeat 3 [1]

For each size it writes the same generated frame (10 ``dt`` partitions, 8 tasks) with plain
``df.write.partitionBy("dt").parquet(dir)``, with the bridge (``tables.write(..., engine="bridge")``) and with
delta-spark (``df.write.format("delta")``), then per table: read + aggregate by ``dt`` (``--reads`` times, the
engines interleaved), MERGE of 1% of the rows (every 100th id, value changed, keys ``dt, id``: updates only)
and OPTIMIZE (compaction of the 8 files per partition).  Parquet has no MERGE or OPTIMIZE (``-``).  The
engine order rotates with each repeat; every figure is the median over repeats.  Printed ratios:
bridge / delta-spark and bridge / parquet; the bridge's target is <= 1.0x delta-spark on write and read.

delta-spark needs its jars (``./setup.sh jvm``) and the Spark they are built for: when this Python's Spark
cannot load them, the script runs itself again in the delta-spark runtime ``.venv-delta`` (the bridge and
parquet then run on that Spark as well, so all three share one session).  Without either, it compares the
bridge with parquet only and says why.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from lakeloop import jvm, tables  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

OPS = ("write", "read", "first_read", "merge", "optimize")
TARGETS = {"write": 1.0, "read": 1.0, "first_read": 1.0}  # bridge / delta-spark


def frame(spark: SparkSession, rows: int) -> DataFrame:
    return spark.range(rows, numPartitions=8).selectExpr(
        "id", "date_format(date_add(date'2026-11-01', cast(id % 10 as int)), 'yyyy-MM-dd') as dt",
        "rand(7) * 100 as value", "concat('user-', id % 5000) as user",
        "timestamp_seconds(1795000000 + id) as ts")


def changes(spark: SparkSession, rows: int) -> DataFrame:
    """1% of the rows with a new value: the MERGE source (identical for both Delta engines)."""
    return frame(spark, rows).where("id % 100 = 0").withColumn("value", F.col("value") + 1000)


def aggregate(df: DataFrame) -> list:
    return df.groupBy("dt").agg(F.count("*").alias("n"), F.sum("value").alias("s"),
                                F.countDistinct("user").alias("u")).collect()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Engine:
    """One way to store a table: write, read, merge and optimize (None where the format has none)."""

    def __init__(self, name: str, spark: SparkSession) -> None:
        self.name, self.spark = name, spark

    def write(self, df: DataFrame, path: str) -> None:
        if self.name == "parquet":
            df.write.partitionBy("dt").parquet(path)
        elif self.name == "bridge":
            tables.write(df, path, partition_by=["dt"], engine="bridge")
        else:
            df.write.format("delta").partitionBy("dt").save(path)

    def read(self, path: str) -> DataFrame:
        if self.name == "parquet":
            return self.spark.read.parquet(path)
        if self.name == "bridge":
            return tables.read(self.spark, path, engine="bridge")
        return self.spark.read.format("delta").load(path)

    def merge(self, path: str, source: DataFrame) -> None:
        if self.name == "bridge":
            tables.merge(self.spark, path, source, keys=["dt", "id"])
        else:
            source.createOrReplaceTempView("bench_changes")
            self.spark.sql(f"MERGE INTO delta.`{path}` t USING bench_changes s ON t.dt = s.dt AND t.id = s.id "
                           "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *").collect()

    def optimize(self, path: str) -> None:
        if self.name == "bridge":
            tables.optimize(path)
        else:
            self.spark.sql(f"OPTIMIZE delta.`{path}`").collect()


def _check(engines: list[Engine], paths: dict[str, str], rows: int) -> None:
    """Every engine holds the same rows per partition; the merge changed 1% of the values."""
    seen = {e.name: sorted((str(r.dt), r.n, round(r.s, 3)) for r in aggregate(e.read(paths[e.name])))
            for e in engines}
    counts = {name: [(dt, n) for dt, n, _ in got] for name, got in seen.items()}
    assert len({tuple(c) for c in counts.values()}) == 1, f"row counts differ: {counts}"
    assert sum(n for _, n in next(iter(counts.values()))) == rows
    delta = [seen[n] for n in ("bridge", "delta-spark") if n in seen]
    assert all(d == delta[0] for d in delta), f"the Delta engines differ after the merge: {delta}"


def bench_size(spark: SparkSession, engines: list[Engine], rows: int, repeat: int, root: Path,
               reads: int) -> dict[str, dict[str, float]]:
    df = frame(spark, rows)
    source = changes(spark, rows)
    times: dict[str, dict[str, list[float]]] = {e.name: {op: [] for op in OPS} for e in engines}
    for i in range(repeat):
        order = engines[i % len(engines):] + engines[:i % len(engines)]
        paths = {e.name: str(root / f"{e.name}-{rows}-{i}") for e in engines}
        for e in order:
            times[e.name]["write"].append(timed(lambda e=e, p=paths[e.name]: e.write(df, p)))
        for r in range(reads):  # reads are short and noisy: several per table, interleaved
            for e in order:
                took = timed(lambda e=e, p=paths[e.name]: aggregate(e.read(p)))
                times[e.name]["read"].append(took)
                if r == 0:  # the first read of a freshly written table, as a daily job does
                    times[e.name]["first_read"].append(took)
        for op in ("merge", "optimize"):
            for e in order:
                if e.name != "parquet":
                    call = (lambda e=e, p=paths[e.name]: e.merge(p, source)) if op == "merge" else \
                        (lambda e=e, p=paths[e.name]: e.optimize(p))
                    times[e.name][op].append(timed(call))
        _check(engines, paths, rows)
        for path in paths.values():
            shutil.rmtree(path, ignore_errors=True)
    return {name: {op: statistics.median(v) for op, v in ops.items() if v} for name, ops in times.items()}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def report(rows: int, t: dict[str, dict[str, float]]) -> None:
    for op in OPS:
        got = {name: t.get(name, {}).get(op) for name in ("parquet", "bridge", "delta-spark")}
        cells = " ".join(f"{v:>13.2f}" if v is not None else f"{'-':>13}" for v in got.values())
        target = f"<= {TARGETS[op]}" if op in TARGETS and got["delta-spark"] is not None else ""
        print(f"{rows:>11,} {op:<10} {cells} {_ratio(got['bridge'], got['delta-spark']):>8} "
              f"{_ratio(got['bridge'], got['parquet']):>8} {target}", flush=True)


def session(master: str, with_delta: bool) -> SparkSession:
    builder = (SparkSession.builder.master(master).appName("bench-tables")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               # every engine writes the same timestamp type: the bridge's (Spark's default INT96 has no
               # statistics and is smaller to write, which made plain parquet look faster than it is)
               .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
               .config("spark.driver.memory", "4g").config("spark.sql.shuffle.partitions", "8")
               # delta-spark's snapshot state job gets as many tasks as the shuffles here (default 50)
               .config("spark.databricks.delta.snapshotPartitions", "8"))
    if with_delta:
        jars, props = jvm.spark_settings("delta-spark")
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
        for key, value in props.items():
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _in_delta_runtime(argv: list[str]) -> None:
    """Run this script again in the delta-spark runtime (does not return) when that is where delta-spark runs."""
    python = jvm.delta_runtime_python(ROOT)
    if python is None or Path(sys.executable) == python or os.environ.get("LAKELOOP_BENCH_REEXEC"):
        return
    env = {**os.environ, "LAKELOOP_BENCH_REEXEC": "1", "PYSPARK_PYTHON": str(python),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print(f"delta-spark runs on Spark {jvm.connector('delta').versions.get('spark.version')}: "
          f"running in {python}", flush=True)
    os.execve(str(python), [str(python), __file__, *argv], env)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--repeat", type=int, nargs="+", default=[3],
                   help="repeats per size (one value for all, or one per --rows value)")
    p.add_argument("--reads", type=int, default=3, help="reads of each table per repeat")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--no-delta-spark", action="store_true", help="compare the bridge with parquet only")
    args = p.parse_args(argv)
    with_delta = not args.no_delta_spark and jvm.connector("delta").usable
    if not args.no_delta_spark and not with_delta:
        _in_delta_runtime(argv)
        print(f"delta-spark left out: {jvm.connector('delta').reason}", flush=True)
    spark = session(args.master, with_delta)
    engines = [Engine(n, spark) for n in ("parquet", "bridge", "delta-spark") if with_delta or n != "delta-spark"]
    root = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    try:
        warm = frame(spark, 10_000)  # warm up the JVM on every code path before timing
        for e in engines:
            path = str(root / f"warm-{e.name}")
            e.write(warm, path)
            aggregate(e.read(path))
            if e.name != "parquet":
                e.merge(path, changes(spark, 10_000))
                e.optimize(path)
        repeats = [*args.repeat, *[args.repeat[-1]] * (len(args.rows) - len(args.repeat))]
        print(f"Spark {spark.version}, {args.master}, repeats {repeats[:len(args.rows)]}, reads {args.reads}",
              flush=True)
        print(f"{'rows':>11} {'op':<10} {'parquet s':>13} {'bridge s':>13} {'delta-spark s':>13} "
              f"{'br/ds':>8} {'br/pq':>8} target (br/ds)", flush=True)
        for rows, repeat in zip(args.rows, repeats, strict=False):
            report(rows, bench_size(spark, engines, rows, repeat, root, args.reads))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
