"""Benchmark: the daily pipeline end to end at 1x and 10x events, in one run.

    .venv/bin/python bench/pipeline.py [--events 100000] [--scale 10] [--days 1] [--users 10000] [--items 2000]

For each size, in a fresh warehouse and landing area under ``--work`` (default: a temporary folder),
it runs ``jobs/pipeline.py --datagen --from D --to D+days-1`` in this process: datagen, ingest, curate,
validate, features, train, infer for every day, on the local conf (``conf/local.yaml``).  The sizes
differ only in events per day (``--events`` and ``--scale`` x ``--events``); users and items stay the
same.  A tiny pipeline run first starts the SparkSession and the Python workers, so neither size pays
for them.  It prints the seconds of every step, each size's total and events per second, and the time
ratio of the large run to the small one (target <= 10.5: the pipeline scales at least linearly with the
events).  ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from checkout import ROOT  # noqa: E402 - first: this checkout's lakeloop, also in the Python workers
from lakeloop import cli  # noqa: E402

FIRST_DAY = dt.date(2026, 11, 1)
TARGET_RATIO = 10.5


def _args(work: Path, events: int, users: int, items: int) -> list[str]:
    return ["--env", "local", "--conf-dir", str(ROOT / "conf"),
            "--set", f"warehouse={work / 'warehouse'}", "--set", f"landing={work / 'landing'}",
            "--set", f"datagen.events={events}", "--set", f"datagen.users={users}",
            "--set", f"datagen.items={items}", "--set", "log_level=WARN"]


def run_size(work: Path, events: int, days: int, users: int, items: int) -> dict:
    """One pipeline run over ``days`` days in a fresh ``work`` folder; seconds per step from its report."""
    last = FIRST_DAY + dt.timedelta(days=days - 1)
    t0 = time.monotonic()
    rc = cli.main("pipeline", ["--datagen", "--from", FIRST_DAY.isoformat(), "--to", last.isoformat(),
                               *_args(work, events, users, items)])
    total = time.monotonic() - t0
    (report,) = (work / "warehouse" / "_reports" / "pipeline").glob("*.json")
    data = json.loads(report.read_text())
    steps: dict[str, float] = defaultdict(float)
    for s in data["steps"]:
        steps[s["step"]] += s["seconds"]
    return {"events_per_day": events, "days": days, "exit_code": rc, "seconds": round(total, 1),
            "steps": {k: round(v, 1) for k, v in steps.items()}, "closed_loop": data.get("closed_loop", [])}


def _print(small: dict, large: dict) -> None:
    steps = list(small["steps"])
    print(f"{'step':<10}{small['events_per_day']:>12,} ev{large['events_per_day']:>12,} ev{'ratio':>8}")
    for name in steps:
        a, b = small["steps"][name], large["steps"].get(name, float("nan"))
        print(f"{name:<10}{a:>13.1f}s{b:>13.1f}s{b / a if a else float('nan'):>8.2f}")
    ratio = large["seconds"] / small["seconds"]
    print(f"{'total':<10}{small['seconds']:>13.1f}s{large['seconds']:>13.1f}s{ratio:>8.2f}")
    for run in (small, large):
        events = run["events_per_day"] * run["days"]
        print(f"{run['events_per_day']:,} events/day x {run['days']} day(s): {events / run['seconds']:,.0f} events/s "
              f"end to end, exit code {run['exit_code']}")
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"time ratio {ratio:.2f} for {large['events_per_day'] // small['events_per_day']}x events "
          f"(target <= {TARGET_RATIO}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000, help="events per day of the 1x run")
    p.add_argument("--scale", type=int, default=10, help="events multiplier of the large run")
    p.add_argument("--days", type=int, default=1, help="consecutive days per run (2+: the closed loop too)")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--items", type=int, default=2_000)
    p.add_argument("--work", default=None, help="folder for the warehouses (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-pipeline-"))
    print(f"bench/pipeline: work folder {work}", flush=True)
    warm = run_size(work / "warmup", 2_000, 1, 200, 120)
    print(f"warm-up (2,000 events, session start included): {warm['seconds']}s, exit code {warm['exit_code']}",
          flush=True)
    small = run_size(work / "x1", args.events, args.days, args.users, args.items)
    print(f"1x done: {small['seconds']}s {small['steps']}", flush=True)
    large = run_size(work / f"x{args.scale}", args.events * args.scale, args.days, args.users, args.items)
    print(f"{args.scale}x done: {large['seconds']}s {large['steps']}", flush=True)
    _print(small, large)
    if args.json:
        Path(args.json).write_text(json.dumps({"x1": small, f"x{args.scale}": large, "warmup": warm}, indent=2))
    return 0 if small["exit_code"] == large["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
