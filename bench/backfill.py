"""Benchmark: a year's backfill through the range jobs against the same rows under one date, in one run.

    .venv/bin/python bench/backfill.py [--days 365] [--events 900] [--repeats 3] [--work DIR]

Generates ``--days`` daily folders of events (``lakeloop_apps.recommender.datagen``, about a third of a million
rows for a year at the default size, two files a day), and a second landing area holding the very same files in one
``dt=`` folder.  In one process and one SparkSession (a tiny warm-up run first starts the session and the
Python workers), each repeat runs, in fresh warehouses:

* backfill: ``ingest --from D1 --to Dn``, ``curate --from D1 --to Dn`` then ``validate --from D1 --to Dn``
  (each date against the one before it) over the daily folders;
* single date: ``ingest --date D``, ``curate --date D`` then ``validate --date D`` over the one folder;
* re-runs: ``curate`` and ``validate`` again, of the date and of the range (nothing changed: skipped).

It prints the median seconds of each, the backfill / single-date ratio of the three steps together (target
<= 2) and of each step, and the re-run / run ratios (target <= 0.10).  The drift threshold is set out of reach: the
benchmark measures the cost of the checks, not the gate.  ``--json FILE`` also writes the figures.
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
            "--set", "validate.psi_threshold=1000"]


def _sourced(args: list[str], job: str) -> list[str]:
    return args + (["--table", "silver.events"] if job == "validate" else ["--source", "events"])


def timed(job: str, argv: list[str]) -> float:
    t0 = time.monotonic()
    outcome = cli.execute(job, _sourced(argv, job))
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
    out = {"range_ingest": timed("ingest", a + span), "range_curate": timed("curate", a + span),
           "range_validate": timed("validate", a + span)}
    out |= {"single_ingest": timed("ingest", b + day), "single_curate": timed("curate", b + day),
            "single_validate": timed("validate", b + day)}
    for job in ("curate", "validate"):
        out |= {f"single_{job}_rerun": timed(job, b + day), f"range_{job}_rerun": timed(job, a + span)}
    out["range"] = out["range_ingest"] + out["range_curate"] + out["range_validate"]
    out["single"] = out["single_ingest"] + out["single_curate"] + out["single_validate"]
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
    steps = ("ingest", "curate", "validate")
    for scope, title in (("range", f"backfill of {args.days} dates"), ("single", "the same rows under one date")):
        parts = ", ".join(f"{job} {med[f'{scope}_{job}']:.1f}s" for job in steps)
        print(f"median of {len(runs)}: {title} {med[scope]:.1f}s ({parts})")
    ok = backfill <= TARGET_BACKFILL
    print(f"backfill / single date: {backfill:.2f} (target <= {TARGET_BACKFILL}): {'met' if ok else 'MISSED'}; "
          "per step: " + ", ".join(f"{job} {med[f'range_{job}'] / med[f'single_{job}']:.2f}"
                                   for job in steps))
    for job in ("curate", "validate"):
        for label, scope in (("single date", "single"), ("backfill", "range")):
            run, again = med[f"{scope}_{job}"], med[f"{scope}_{job}_rerun"]
            ok &= again / run <= TARGET_RERUN
            print(f"{job} re-run / run, {label}: {again:.2f}s / {run:.1f}s = {again / run:.3f} "
                  f"(target <= {TARGET_RERUN}): {'met' if again / run <= TARGET_RERUN else 'MISSED'}")
    print(f"load {_load()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med, "days": args.days,
                                               "events": args.events}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
