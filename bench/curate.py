"""Benchmark: where curate's time goes, stage by stage, on one day of bronze lines.

    .venv/bin/python bench/curate.py [--events 300000] [--repeat 3] [--work DIR] [--stages parse,cleanse,...]

One day (:data:`DAY`) of ``--events`` datagen events (users and items growing with them) is generated and ingested
into bronze by ``jobs/pipeline.py --step datagen --step ingest`` in a process of its own (into ``--work``, kept
and reused when given, else a temporary folder).  Then, in one Spark session built as the jobs build theirs
(``conf/base.yaml`` + ``conf/local.yaml``: ``local[2]``, the jobs' JVM flags), each stage of
:mod:`lakeloop.curate` over the day's bronze lines is written to Spark's ``noop`` sink, each stage including the
ones before it:

    read      the bronze snapshot's lines of the day
    parse     + :func:`lakeloop.curate.parse` (the text and JSON kind of every column)
    cleanse   + :func:`lakeloop.curate.cleanse` (typed values, defaults, the reasons of bad values)
    classify  + :func:`lakeloop.curate.classify` (one reason per line)
    dedup     + :func:`lakeloop.curate.deduplicate` (the primary key's window: a shuffle)
    curate    :func:`lakeloop.curate.curate_frame` (all of the above and ``_extra``)
    job       :func:`lakeloop.curate.curate_source` with ``force``: the frame persisted, its counts, the silver and
              quarantine writes and the report (the day's partitions replaced each time)

One warm-up pass of every stage comes first (the JIT, the page cache), then ``--repeat`` rounds, every other one
in reverse order.  Printed per stage: the median wall seconds with their spread, the CPU the session used (its
JVM and Python processes, user + system) per line, the wall seconds times the session's cores per line
(core-microseconds per line), and each stage's increment over the one before.  The machine's load average
before and after is printed with them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkout import ROOT  # noqa: E402 - first: this checkout's lakeloop, also in the Python workers
from memory import tree_cpu  # noqa: E402

DAY = dt.date(2026, 11, 1)
STAGES = ("read", "parse", "cleanse", "classify", "dedup", "curate", "job")


def build_bronze(work: Path, events: int) -> list[str]:
    """One day of ``events`` datagen events in ``work``'s bronze (skipped when already there); the conf
    overrides that point a job at it."""
    overrides = [f"warehouse={work / 'warehouse'}", f"landing={work / 'landing'}", f"datagen.events={events}",
                 f"datagen.users={max(events // 10, 100)}", f"datagen.items={max(events // 50, 50)}",
                 "log_level=WARN"]
    if not (work / "warehouse" / "bronze").exists():
        cmd = [sys.executable, str(ROOT / "jobs" / "pipeline.py"), "--datagen", "--date", DAY.isoformat(),
               "--step", "datagen", "--step", "ingest", *[x for o in overrides for x in ("--set", o)]]
        print(f"bronze: {events:,} events of {DAY} into {work} ...", file=sys.stderr)
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return overrides


def stage_frames(spark, conf, source: str) -> dict:
    """``{stage: function giving its frame}`` over the day's bronze lines of ``source``."""
    from lakeloop import curate
    from lakeloop.lake import Lake
    from lakeloop.schemas import source_schema

    lake = Lake.from_conf(conf)
    schema = source_schema(conf, source)
    version, _ = lake.partition_state(f"bronze.{source}")
    bronze = curate._bronze(spark, lake, schema, [DAY.isoformat()], version)
    parsed = curate.parse(bronze, schema)
    cleansed = curate.cleanse(parsed, schema)
    classified = curate.classify(cleansed, schema)
    return {"read": lambda: bronze, "parse": lambda: parsed, "cleanse": lambda: cleansed,
            "classify": lambda: classified, "dedup": lambda: curate.deduplicate(classified, schema),
            "curate": lambda: curate.curate_frame(bronze, schema),
            "job": lambda: lambda: curate.curate_source(spark, conf, source, DAY.isoformat(), force=True)}


def measure(frame) -> tuple[float, float]:
    """Wall and CPU seconds of writing ``frame`` to the ``noop`` sink (of calling it, for the job)."""
    cpu, t0 = tree_cpu(), time.perf_counter()
    if callable(frame):
        frame()
    else:
        frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0, tree_cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", type=Path, default=None, help="folder of the generated day (kept; reused when there)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of " + ", ".join(STAGES))
    p.add_argument("--source", default="events")
    args = p.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        p.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        work = args.work or Path(tmp)
        overrides = build_bronze(work, args.events)
        run(overrides, stages, args.repeat, args.source)
    return 0


def run(overrides: list[str], stages: list[str], repeat: int, source: str) -> None:
    from lakeloop.conf import load_conf
    from lakeloop.session import RunContext, build_session

    conf = load_conf("local", overrides)
    spark = build_session(RunContext(job="bench-curate", conf=conf, run_date=DAY))
    cores = spark.sparkContext.defaultParallelism
    frames = stage_frames(spark, conf, source)
    lines = frames["read"]().count()
    load_before = os.getloadavg()[0]
    for stage in stages:  # warm-up
        measure(frames[stage]())
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in stages}
    for r in range(repeat):
        for stage in stages if r % 2 == 0 else stages[::-1]:
            runs[stage].append(measure(frames[stage]()))
    spark.stop()
    report(runs, lines, cores, load_before)


def report(runs: dict[str, list[tuple[float, float]]], lines: int, cores: int, load_before: float) -> None:
    rounds = len(next(iter(runs.values())))
    print(f"curate by stage: {lines:,} bronze lines of {DAY}, {cores} cores, median of {rounds} rounds"
          f" after a warm-up; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'stage':9} {'wall s':>7} {'range':>11} {'core-us/line':>12} {'+ over previous':>15} {'CPU us/line':>11}")
    previous = None
    for stage, samples in runs.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        core_us = wall * cores / lines * 1e6
        step = "" if previous is None else f"{core_us - previous:+.1f}"
        print(f"{stage:9} {wall:>7.2f} {min(w for w, _ in samples):>5.2f}-{max(w for w, _ in samples):<5.2f} "
              f"{core_us:>12.1f} {step:>15} {cpu / lines * 1e6:>11.1f}")
        previous = core_us


if __name__ == "__main__":
    sys.exit(main())
