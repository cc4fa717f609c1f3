"""Benchmark: ``materialize`` of a feature set of 10M entities into Redis, with the driver's peak memory.

    .venv/bin/python bench/materialize.py [--entities 10000000] [--driver-memory 2g] [--partitions 8]
                                          [--master standalone|local]

A conf directory of its own (in a temporary folder) declares one feature set over a silver table of one event
per entity (a count, a sum, a mean, a last value and a derived ratio); the table is written straight to silver
for the run date (``--entities`` rows, Spark's ``range``), then ``jobs/materialize.py`` runs as a process of its
own at ``spark.driver.memory`` = ``--driver-memory`` (the default conf's 2g) against a redis-server on a free
loopback port, on a Spark standalone cluster on loopback (a master and one worker of 2 cores, executors of the
default conf's 2g; ``--master local``: local mode, where the driver's JVM also runs the tasks).  While it runs,
the resident memory of the driver's Python process, of the driver's JVM, of its Python workers (local mode) and
of the executor JVMs with their Python workers (standalone) is sampled every 0.1 s.  Printed: the job's seconds,
entities per second, the keys in the loaded version (entities + the absent-entity row, checked), Redis' memory,
and the three peaks against the target (driver: Python + JVM <= 1.5 GB; nothing is collected to the driver).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkout import ROOT, tests_module  # noqa: E402 - first: this checkout's lakeloop, also in the Python workers
from memory import Peaks  # noqa: E402
from serving import _redis_server_class  # noqa: E402

RUN_DATE = dt.date(2026, 11, 2)
SET = "entity_totals"
TARGET_DRIVER_GB = 1.5

FEATURE_SET = """\
description: per entity, its events of the day (the materialize benchmark's set)
source: silver.bench_events
entity: entity_id
time: ts
window: 1d
as_of: end_of_day
materialize: false
features:
  - {name: events, kind: aggregate, agg: count}
  - {name: total, kind: aggregate, agg: sum, expr: amount}
  - {name: mean_amount, kind: aggregate, agg: mean, expr: amount}
  - {name: last_amount, kind: aggregate, agg: last, expr: amount}
  - {name: share_of_last, kind: derived, expr: "CASE WHEN total > 0 THEN last_amount / total END"}
"""


def write_conf(root: Path, redis_port: int, partitions: int) -> Path:
    conf = root / "conf"
    (conf / "features").mkdir(parents=True)
    (conf / "base.yaml").write_text(
        f"warehouse: {root / 'warehouse'}\nlanding: {root / 'landing'}\n"
        f"spark:\n  master: local[*]\n  sql.shuffle.partitions: {partitions}\n  ui.showConsoleProgress: false\n"
        f"serving:\n  store: redis\n  redis: {{host: 127.0.0.1, port: {redis_port}}}\n")
    (conf / "local.yaml").write_text("spark:\n  master: local[*]\n")
    (conf / "features" / f"{SET}.yaml").write_text(FEATURE_SET)
    return conf


def write_events(conf_dir: Path, entities: int, partitions: int) -> None:
    """``silver.bench_events``: one event per entity on :data:`RUN_DATE`, in ``partitions`` files."""
    from lakeloop.conf import load_conf
    from lakeloop.lake import Lake
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    conf = load_conf("local", [], conf_dir)
    spark = (SparkSession.builder.master("local[*]").appName("bench-materialize-data")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    start = int(dt.datetime.combine(RUN_DATE, dt.time(), dt.UTC).timestamp())
    df = (spark.range(0, entities, numPartitions=partitions)
          .select(F.col("id").alias("entity_id"),
                  F.timestamp_seconds(F.lit(start) + F.col("id") % 86_000).alias("ts"),
                  (F.col("id") % 997 / 10.0).alias("amount"), F.lit(RUN_DATE.isoformat()).alias("dt")))
    Lake.from_conf(conf).write(df, "silver.bench_events", mode="overwrite", partition_by=["dt"])
    spark.stop()


def run_materialize(conf_dir: Path, driver_memory: str, master: str | None) -> tuple[int, float, Peaks]:
    cmd = [sys.executable, str(ROOT / "jobs" / "materialize.py"), "--env", "local", "--conf-dir", str(conf_dir),
           "--date", RUN_DATE.isoformat(), "--feature-set", SET, "--set", f"spark.driver.memory={driver_memory}",
           "--set", "log_level=WARN"]
    if master is not None:
        cmd += ["--set", f"spark.master={master}", "--set", "spark.executor.memory=2g", "--set",
                "spark.executor.cores=2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), str(ROOT)]))
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    with Peaks(proc.pid) as peaks:
        rc = proc.wait()
    return rc, time.monotonic() - t0, peaks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=10_000_000)
    p.add_argument("--driver-memory", default="2g", help="spark.driver.memory of the job (the default conf's)")
    p.add_argument("--partitions", type=int, default=8, help="files of the events table, shuffle partitions")
    p.add_argument("--master", choices=("standalone", "local"), default="standalone")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-materialize-") as tmp:
        server = _redis_server_class()(Path(tmp) / "redis").start()
        try:
            conf_dir = write_conf(Path(tmp), server.port, args.partitions)
            print(f"writing {args.entities:,} events ...", file=sys.stderr)
            write_events(conf_dir, args.entities, args.partitions)
            load_before = os.getloadavg()[0]
            with contextlib.ExitStack() as stack:
                master = None
                if args.master == "standalone":
                    cluster = stack.enter_context(tests_module("spark_standalone").running(
                        Path(tmp) / "standalone", workers=1, cores=2, memory="3g"))
                    master = cluster.master_url
                rc, seconds, peaks = run_materialize(conf_dir, args.driver_memory, master)
            if rc != 0:
                print(f"materialize failed: exit {rc}", file=sys.stderr)
                return 1
            report(conf_dir, args, seconds, peaks, load_before, server.port)
        finally:
            server.stop()
    return 0


def report(conf_dir: Path, args: argparse.Namespace, seconds: float, peaks: Peaks, load_before: float,
           port: int) -> None:
    import redis
    from lakeloop.conf import load_conf
    from lakeloop.materialize import feature_store

    store = feature_store(load_conf("local", [], conf_dir), SET)
    keys = store.load_info(store.current_version()).count
    used = redis.Redis(port=port).info("memory")["used_memory"]
    gb = 1024 ** 3
    driver = (peaks.driver + peaks.jvm) / gb
    cluster = "one worker of 2 cores, 2g executors" if args.master == "standalone" else "local[*]"
    print(f"materialize bench: {args.entities:,} entities of {SET} -> Redis; spark.driver.memory "
          f"{args.driver_memory}, {args.master} ({cluster}) on {os.cpu_count()} CPUs; load average "
          f"{load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"job {seconds:.1f} s (process start to exit), {args.entities / seconds:,.0f} entities/s; "
          f"version {store.current_version()}: {keys:,} keys (entities + the absent-entity row: "
          f"{'ok' if keys == args.entities + 1 else 'WRONG'}); Redis used memory {used / gb:.2f} GB")
    where = "the driver" if args.master == "standalone" else "the driver, and the tasks in local mode"
    print(f"peak RSS: driver Python {peaks.driver / gb:.2f} GB, JVM ({where}) {peaks.jvm / gb:.2f} GB, its Python "
          f"workers {peaks.workers / gb:.2f} GB; executors (JVMs, their Python workers) {peaks.executors / gb:.2f} GB")
    print(f"target driver peak RSS (Python + JVM) {driver:.2f} GB <= {TARGET_DRIVER_GB} GB: "
          f"{'met' if driver <= TARGET_DRIVER_GB else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
