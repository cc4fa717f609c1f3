"""Benchmark: a year's backfill through the range jobs against the same rows under one date, in one run.

    .venv/bin/python bench/backfill.py [--days 365] [--events 900] [--repeats 3] [--work DIR]

Generates ``--days`` daily folders of events (``lakeloop_apps.recommender.datagen``, about a third of a million
rows for a year at the default size, two files a day), and a second landing area holding the very same files in one
``dt=`` folder.  In one process and one SparkSession (a tiny warm-up run first starts the session and the
Python workers), each repeat runs, in fresh warehouses:

* backfill: ``ingest --from D1 --to Dn`` then ``curate --from D1 --to Dn`` over the daily folders;
* single date: ``ingest --date D`` then ``curate --date D`` over the one folder;
* re-runs: ``curate --date D`` again, and ``curate --from D1 --to Dn`` again (nothing changed: skipped).

It prints the median seconds of each, the backfill / single-date ratio (target <= 2) and the curate
re-run / run ratios (target <= 0.10).  ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from checkout import ROOT  # noqa: E402 - first: this checkout's lakeloop, also in the Python workers
from lakeloop import cli  # noqa: E402

FIRST_DAY = dt.date(2025, 11, 1)
TARGET_BACKFILL, TARGET_RERUN = 2.0, 0.10


def generate(landing: Path, days: int, events: int) -> list[str]:
    """``days`` daily folders of events under ``landing``; the dates."""
    from lakeloop_apps.recommender.datagen import generate as write_days

    dates = [(FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(days)]
    write_days(landing, dates, events=events, users=200, items=100, seed=11, bad_fraction=0.02, parts=2)
    return dates


def one_folder(daily: Path, single: Path, date: str) -> None:
    """The event files of every daily folder, renamed by their date, in ``single``'s one ``dt=date`` folder."""
    target = single / "events" / f"dt={date}"
    target.mkdir(parents=True, exist_ok=True)
    for folder in sorted((daily / "events").glob("dt=*")):
        for f in folder.iterdir():
            if f.is_file() and not f.name.startswith((".", "_")):
                shutil.copy2(f, target / f"{folder.name[3:]}-{f.name}")


def _args(work: Path, landing: Path) -> list[str]:
    return ["--env", "local", "--conf-dir", str(ROOT / "conf"), "--set", f"warehouse={work}",
            "--set", f"landing={landing}", "--set", "log_level=WARN", "--set", "curate.max_quarantine_rate=0.2",
            "--source", "events"]


def timed(job: str, argv: list[str]) -> float:
    t0 = time.monotonic()
    outcome = cli.execute(job, argv)
    seconds = time.monotonic() - t0
    if outcome.exit_code != 0:
        raise SystemExit(f"bench/backfill: {job} {' '.join(argv)} exited {outcome.exit_code}")
    return seconds


def repeat(work: Path, daily: Path, single: Path, dates: list[str]) -> dict[str, float]:
    """One repeat in fresh warehouses: seconds of every measured run."""
    for sub in ("range", "single"):
        shutil.rmtree(work / sub, ignore_errors=True)
    span = ["--from", dates[0], "--to", dates[-1]]
    day = ["--date", dates[-1]]
    a, b = _args(work / "range", daily), _args(work / "single", single)
    out = {"range_ingest": timed("ingest", a + span), "range_curate": timed("curate", a + span)}
    out |= {"single_ingest": timed("ingest", b + day), "single_curate": timed("curate", b + day)}
    out |= {"single_curate_rerun": timed("curate", b + day), "range_curate_rerun": timed("curate", a + span)}
    out["range"] = out["range_ingest"] + out["range_curate"]
    out["single"] = out["single_ingest"] + out["single_curate"]
    return out


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=365, help="daily folders of the backfill")
    p.add_argument("--events", type=int, default=900, help="event lines per day")
    p.add_argument("--repeats", type=int, default=3, help="repeats; medians are printed")
    p.add_argument("--work", default=None, help="folder for landing areas and warehouses (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-backfill-"))
    print(f"bench/backfill: work folder {work}; load {_load()}", flush=True)
    t0 = time.monotonic()
    daily, single = work / "landing-daily", work / "landing-single"
    dates = generate(daily, args.days, args.events)
    one_folder(daily, single, dates[-1])
    print(f"generated {args.days} days x {args.events} events in {time.monotonic() - t0:.1f}s", flush=True)
    warm = generate(work / "landing-warm", 2, 50)
    timed("ingest", _args(work / "warm", work / "landing-warm") + ["--from", warm[0], "--to", warm[-1]])
    timed("curate", _args(work / "warm", work / "landing-warm") + ["--from", warm[0], "--to", warm[-1]])
    runs = []
    for i in range(args.repeats):
        runs.append(repeat(work, daily, single, dates))
        print(f"repeat {i + 1}: " + ", ".join(f"{k} {v:.1f}s" for k, v in runs[-1].items()) + f"; load {_load()}",
              flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    backfill = med["range"] / med["single"]
    rerun_single = med["single_curate_rerun"] / med["single_curate"]
    rerun_range = med["range_curate_rerun"] / med["range_curate"]
    print(f"median of {len(runs)}: backfill of {args.days} dates (ingest + curate) {med['range']:.1f}s "
          f"(ingest {med['range_ingest']:.1f}s, curate {med['range_curate']:.1f}s); the same rows under one date "
          f"{med['single']:.1f}s (ingest {med['single_ingest']:.1f}s, curate {med['single_curate']:.1f}s)")
    print(f"backfill / single date: {backfill:.2f} (target <= {TARGET_BACKFILL}): "
          f"{'met' if backfill <= TARGET_BACKFILL else 'MISSED'}")
    for label, ratio, run, again in (("single date", rerun_single, med["single_curate"], med["single_curate_rerun"]),
                                     ("backfill", rerun_range, med["range_curate"], med["range_curate_rerun"])):
        print(f"curate re-run / run, {label}: {again:.2f}s / {run:.1f}s = {ratio:.3f} (target <= {TARGET_RERUN}): "
              f"{'met' if ratio <= TARGET_RERUN else 'MISSED'}")
    print(f"load {_load()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med, "days": args.days,
                                               "events": args.events}, indent=2))
    return 0 if backfill <= TARGET_BACKFILL and max(rerun_single, rerun_range) <= TARGET_RERUN else 1


if __name__ == "__main__":
    sys.exit(main())
