"""The demo: sample data for a few days, then every pipeline step that exists, in order, and last
the speed layer: new events landing in two waves, the real-time view read after each.

Each step is a job module's ``main(argv)`` run in this process, so they share one SparkSession.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence

from lakeloop.errors import EXIT_USAGE
from lakeloop.pipeline import DAILY_STEPS
from lakeloop.pipeline import load_job as _load

__all__ = ["STEPS", "main"]

# job module, extra arguments: sample data, then the daily DAG; steps whose module is not present are skipped
STEPS: list[tuple[str, list[str]]] = [("datagen", [])] + [(s.name, list(s.extra)) for s in DAILY_STEPS]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo", description="sample data + the daily pipeline, locally")
    p.add_argument("--env", default="local")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--conf-dir", default=None)
    p.add_argument("--date", default="2026-11-01", help="first day (default 2026-11-01)")
    p.add_argument("--days", type=int, default=2, help="consecutive days to run (default 2)")
    p.add_argument("--events", type=int, default=None, help="events per day (default: conf datagen.events)")
    return p


def _print_closed_loop(args: argparse.Namespace, dates: list[str]) -> None:
    """The per-day model metric and served click-through (see docs/pipeline.md, closed loop)."""
    from lakeloop.closed_loop import daily_metrics, format_table
    from lakeloop.conf import load_conf

    rows = daily_metrics(load_conf(args.env, args.overrides, conf_dir=args.conf_dir), dates)
    if rows:
        print("demo: closed loop (model trained each day; reactions to the previous day's served lists)")
        for line in format_table(rows):
            print(f"demo:   {line}")


def _print_realtime(args: argparse.Namespace, date: str, user: int = 1) -> None:
    """The speed layer: new events of ``user`` landing in two waves, the stream run after each and
    the real-time view read between them (see docs/streaming.md, demo)."""
    from pyspark.sql import SparkSession

    from lakeloop.conf import load_conf
    from lakeloop.streaming.waves import describe, realtime_waves

    t0 = time.monotonic()
    views = realtime_waves(SparkSession.builder.getOrCreate(),
                           load_conf(args.env, args.overrides, conf_dir=args.conf_dir), date, user=user)
    print(f"demo: real-time view of user {user} as new events land (stream --trigger availableNow after each wave)")
    for wave, view in enumerate(views, 1):
        print(f"demo:   after wave {wave}: {describe(view)}")
    print(f"demo: stream    {date}  {time.monotonic() - t0:6.1f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        first = dt.date.fromisoformat(args.date)
    except ValueError:
        print(f"demo: --date {args.date!r}: expected YYYY-MM-DD", file=sys.stderr)
        return EXIT_USAGE
    common = ["--env", args.env] + [x for o in args.overrides for x in ("--set", o)]
    if args.conf_dir:
        common += ["--conf-dir", args.conf_dir]
    ran: list[str] = []
    skipped = sorted({job for job, _ in STEPS if _load(job) is None})
    for day in range(args.days):
        date = (first + dt.timedelta(days=day)).isoformat()
        for job, extra in STEPS:
            module = _load(job)
            if module is None:
                continue
            step_args = common + ["--date", date] + extra
            if job == "datagen" and args.events:
                step_args += ["--events", str(args.events)]
            t0 = time.monotonic()
            rc = module.main(step_args)
            print(f"demo: {job:<9} {date}  rc={rc}  {time.monotonic() - t0:6.1f}s", flush=True)
            if rc != 0:
                print(f"demo: stopped at {job} for {date} (exit code {rc})", file=sys.stderr)
                return rc
            ran.append(f"{job}@{date}")
    print(f"demo: ran {len(ran)} steps: {', '.join(ran)}")
    _print_closed_loop(args, [(first + dt.timedelta(days=d)).isoformat() for d in range(args.days)])
    if _load("stream") is not None and args.days > 0:
        _print_realtime(args, (first + dt.timedelta(days=args.days - 1)).isoformat())
    if skipped:
        print(f"demo: not available yet: {', '.join(skipped)}")
    return 0
