"""Benchmark: the daily pipeline end to end at several sizes, its fixed cost and its cost per event, in one run.

    .venv/bin/python bench/pipeline.py [--sizes 300000,1000000,3000000] [--repeat 3] [--master standalone|local]
                                       [--events-per-user 10] [--events-per-item 50] [--json FILE]

Each size is one day of ``--sizes`` events, with users and items growing with it (``--events-per-user``,
``--events-per-item``).  A run is ``jobs/pipeline.py --datagen`` for that day as a process of its own (datagen,
ingest, curate, validate, features, train, infer), on the default conf (``conf/base.yaml`` + ``conf/local.yaml``,
``spark.driver.memory`` and ``spark.executor.memory`` 2g, the JVM flags of ``--java-options``) in a fresh
warehouse.  By default it runs on a Spark standalone cluster on loopback (a master and one worker of all the
machine's cores, one executor), so that the driver's memory is measured apart from the executors'; ``--master
local`` runs in local mode, where the driver's JVM also runs the tasks.  One warm-up run of the smallest size
comes first (page cache, the cluster's first executor), then ``--repeat`` rounds, each running every size once in
a shuffled order (no size always runs first).

Printed: per size and step the median seconds of the repeats with their spread (min-max), then per step and end to
end a least-squares line ``seconds = fixed + events x marginal`` over the sizes: the fixed seconds and the marginal
core-microseconds per event (marginal seconds x the machine's cores) against the target (end to end <= 60), and the
peak resident memory of the driver (Python + JVM) and of the executors (JVMs and their Python workers) per size:
it must stay flat as the events grow (no step collects rows to the driver) and within the 2g the conf gives each.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from checkout import ROOT, tests_module  # noqa: E402 - first: this checkout's lakeloop, also in the Python workers
from memory import GB, Peaks  # noqa: E402

DAY = dt.date(2026, 11, 1)
TARGET_CORE_US = 60.0
MEMORY = "2g"  # conf/base.yaml's driver and executor memory
LIMIT_GB = 2.0


def _conf(work: Path, events: int, users: int, items: int, master: str | None, java: str) -> list[str]:
    items_ = [f"warehouse={work / 'warehouse'}", f"landing={work / 'landing'}", f"datagen.events={events}",
              f"datagen.users={users}", f"datagen.items={items}", "log_level=WARN",
              f"spark.driver.memory={MEMORY}", f"spark.driver.extraJavaOptions={java}"]
    if master is not None:
        items_ += [f"spark.master={master}", f"spark.executor.memory={MEMORY}",
                   f"spark.executor.cores={os.cpu_count()}", f"spark.executor.extraJavaOptions={java}"]
    return [x for item in items_ for x in ("--set", item)]


def run_once(work: Path, events: int, users: int, items: int, master: str | None, java: str) -> dict:
    """One pipeline process for :data:`DAY` in a fresh ``work`` folder: its seconds, per step, and memory peaks."""
    cmd = [sys.executable, str(ROOT / "jobs" / "pipeline.py"), "--datagen", "--date", DAY.isoformat(),
           "--env", "local", "--conf-dir", str(ROOT / "conf"), *_conf(work, events, users, items, master, java)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    with Peaks(proc.pid) as peaks:
        rc = proc.wait()
    seconds = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"pipeline of {events:,} events failed: exit code {rc} (work folder {work})")
    (report,) = (work / "warehouse" / "_reports" / "pipeline").glob("*.json")
    steps: dict[str, float] = defaultdict(float)
    for s in json.loads(report.read_text())["steps"]:
        steps[s["step"]] += s["seconds"]
    return {"seconds": seconds, "steps": dict(steps), "driver_gb": (peaks.driver + peaks.jvm) / GB,
            "driver_workers_gb": peaks.workers / GB, "executors_gb": peaks.executors / GB}


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``: ``(a, b)``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def _median(runs: list[dict], key: str, step: str | None = None) -> tuple[float, float, float]:
    values = [r["steps"].get(step, 0.0) if step else r[key] for r in runs]
    return statistics.median(values), min(values), max(values)


def _cell(size: dict, name: str) -> tuple[float, float, float]:
    return size["total"] if name == "total" else size["steps"][name]


def summarize(sizes: list[int], runs: dict[int, list[dict]]) -> dict:
    """Medians per size and step, the line per step and end to end, the memory peaks per size."""
    steps = list(runs[sizes[0]][0]["steps"])
    cores = os.cpu_count() or 1
    out: dict = {"cores": cores, "sizes": {}, "fit": {}}
    for n in sizes:
        out["sizes"][n] = {"total": _median(runs[n], "seconds"),
                           "steps": {s: _median(runs[n], "", s) for s in steps},
                           "driver_gb": max(r["driver_gb"] for r in runs[n]),
                           "executors_gb": max(r["executors_gb"] for r in runs[n]),
                           "driver_workers_gb": max(r["driver_workers_gb"] for r in runs[n])}
    for name in [*steps, "total"]:
        ys = [_cell(out["sizes"][n], name)[0] for n in sizes]
        fixed, marginal = fit([float(n) for n in sizes], ys)
        out["fit"][name] = {"fixed_s": fixed, "core_us_per_event": marginal * cores * 1e6}
    return out


def _print(sizes: list[int], s: dict, header: str) -> None:
    print(header)
    steps = list(s["sizes"][sizes[0]]["steps"])
    print(f"{'step':<10}" + "".join(f"{n:>22,}" for n in sizes) + f"{'fixed s':>10}{'core-us/ev':>12}")
    for name in [*steps, "total"]:
        cells = [_cell(s["sizes"][n], name) for n in sizes]
        line = "".join(f"{m:>9.1f}s ({lo:.1f}-{hi:.1f})".rjust(22) for m, lo, hi in cells)
        f = s["fit"][name]
        print(f"{name:<10}{line}{f['fixed_s']:>10.1f}{f['core_us_per_event']:>12.1f}")
    total = s["fit"]["total"]["core_us_per_event"]
    print(f"end to end: {total:.1f} core-us per event on {s['cores']} cores (target <= {TARGET_CORE_US:.0f}): "
          f"{'met' if total <= TARGET_CORE_US else 'MISSED'}; fixed {s['fit']['total']['fixed_s']:.1f} s per run")
    print("peak RSS (GB)      " + "".join(f"{n:>12,}" for n in sizes))
    for key, label in (("driver_gb", "driver (Py + JVM)"), ("executors_gb", "executors"),
                       ("driver_workers_gb", "driver's workers")):
        print(f"{label:<19}" + "".join(f"{s['sizes'][n][key]:>12.2f}" for n in sizes))
    largest = s["sizes"][sizes[-1]]
    flat = largest["driver_gb"] <= s["sizes"][sizes[0]]["driver_gb"] * 1.25
    within = max(largest["driver_gb"], largest["executors_gb"]) <= LIMIT_GB * 1.5
    print(f"driver memory flat as events grow (largest <= 1.25x smallest): {'met' if flat else 'MISSED'}; "
          f"largest size within the conf's {MEMORY} heaps (RSS <= {LIMIT_GB * 1.5:.1f} GB with JVM overhead): "
          f"{'met' if within else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="300000,1000000,3000000", help="events per day of each size, comma-separated")
    p.add_argument("--repeat", type=int, default=3, help="rounds over the sizes after the warm-up (>= 3)")
    p.add_argument("--events-per-user", type=int, default=10)
    p.add_argument("--events-per-item", type=int, default=50)
    p.add_argument("--master", choices=("standalone", "local"), default="standalone")
    p.add_argument("--java-options", default="-XX:+UseSerialGC -XX:ReservedCodeCacheSize=512m",
                   help="the driver's and executors' JVM flags (the tests' sessions add -XX:TieredStopAtLevel=1)")
    p.add_argument("--seed", type=int, default=5, help="of the shuffled order of the sizes in each round")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    if len(sizes) < 3:
        p.error("--sizes: at least three sizes for the line")
    shape = {n: (max(200, n // args.events_per_user), max(120, n // args.events_per_item)) for n in sizes}
    load_before = os.getloadavg()
    rng = random.Random(args.seed)
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, contextlib.ExitStack() as stack:
        master = None
        if args.master == "standalone":
            cluster = stack.enter_context(tests_module("spark_standalone").running(
                Path(tmp) / "standalone", workers=1, cores=os.cpu_count() or 1, memory="3g"))
            master = cluster.master_url
        run = 0

        def one(n: int) -> dict:
            nonlocal run
            run += 1
            return run_once(Path(tmp) / f"run-{run}", n, *shape[n], master, args.java_options)

        warm = one(sizes[0])
        print(f"warm-up ({sizes[0]:,} events): {warm['seconds']:.1f} s", flush=True)
        for r in range(args.repeat):
            for n in rng.sample(sizes, len(sizes)):
                runs[n].append(one(n))
                print(f"round {r + 1}: {n:,} events ({shape[n][0]:,} users, {shape[n][1]:,} items) "
                      f"{runs[n][-1]['seconds']:.1f} s", flush=True)
    summary = summarize(sizes, runs)
    header = (f"pipeline bench: one day per run, {args.master} ({os.cpu_count()} cores), JVM {args.java_options!r}; "
              f"median of {args.repeat} rounds (min-max); load average {load_before[0]:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after")
    _print(sizes, summary, header)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary,
                                               "runs": {str(n): r for n, r in runs.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
