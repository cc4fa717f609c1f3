"""Speed of the synthetic data generator, as ratios measured in one run.

    python bench/datagen.py [--events 1000000] [--spark-cores 2]

Prints events per second for one day written in this process and as Spark tasks (``local[N]``), and
how both compare with only writing the same bytes (the floor any generator pays).  Every timing ends with
``os.sync()`` (the bytes on disk, not only in the page cache) and is the median of ``--repeat`` runs, after a
warm-up, with the spread (min-max).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lakeloop_apps.recommender.datagen import generate_day, spark_runner

DATE = "2026-11-01"


def _timed(fn) -> float:
    os.sync()  # nothing written before counts
    t0 = time.perf_counter()
    fn()
    os.sync()
    return time.perf_counter() - t0


def _cpu_timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is steadier on a shared machine."""
    c0 = time.process_time()
    wall = _timed(fn)
    return wall, time.process_time() - c0


def _write_only(src: Path, dst: Path) -> float:
    """Seconds to write the files under ``src`` again (already compressed bytes, no generation)."""
    blobs = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}

    def write() -> None:
        for rel, data in blobs.items():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).write_bytes(data)

    return _timed(write)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--spark-cores", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    params = dict(events=args.events, users=args.users, items=args.items, seed=42, bad_fraction=0.02)

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (SparkSession.builder.master(f"local[{args.spark_cores}]").appName("bench-datagen")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_day(root / "warm", DATE, **dict(params, events=1000))  # imports, shop arrays
        generate_day(root / "warm", DATE, runner=spark_runner(spark), **dict(params, events=1000))
        runs: dict[str, list[float]] = {"local": [], "cpu": [], "spark": [], "floor": []}
        for i in range(args.repeat):
            wall, cpu = _cpu_timed(lambda i=i: generate_day(root / f"local-{i}", DATE, **params))
            runs["local"].append(wall)
            runs["cpu"].append(cpu)
            runs["spark"].append(_timed(lambda i=i: generate_day(root / f"spark-{i}", DATE,
                                                                 runner=spark_runner(spark), **params)))
            runs["floor"].append(_write_only(root / f"local-{i}", root / f"copy-{i}"))
            size = sum(f.stat().st_size for f in (root / f"local-{i}").rglob("*") if f.is_file())
            for folder in ("local", "spark", "copy"):
                shutil.rmtree(root / f"{folder}-{i}")
    spark.stop()
    n = args.events
    med = {k: statistics.median(v) for k, v in runs.items()}

    def spread(key: str) -> str:
        return f"({min(runs[key]):.2f}-{max(runs[key]):.2f})"

    local, parallel, floor = med["local"], med["spark"], med["floor"]
    print(f"datagen bench: {n} events/day, {args.users} users, {args.items} items, {size / 1e6:.0f} MB on disk; "
          f"median of {args.repeat} (min-max), each ending with os.sync(); load average {os.getloadavg()[0]:.1f}")
    print(f"  in process          {local:7.2f} s {spread('local')}  {n / local:12,.0f} events/s"
          f"  ({med['cpu']:.2f} CPU s, {n / med['cpu']:,.0f} events per CPU second)")
    print(f"  spark local[{args.spark_cores}]      {parallel:7.2f} s {spread('spark')}  {n / parallel:12,.0f} events/s")
    print(f"  write bytes only    {floor:7.2f} s {spread('floor')}")
    print(f"  ratio in-process / write-only  {local / floor:6.1f}x")
    print(f"  ratio spark / in-process       {parallel / local:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
