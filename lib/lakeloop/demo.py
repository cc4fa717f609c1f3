"""The demo: sample data for a few days, then every pipeline step that exists, in order, and last
the speed layer: new events landing in two waves, the real-time view read after each.

Each step is a job run in this process through :func:`lakeloop.cli.execute`, so they share one SparkSession.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

from lakeloop import cli
from lakeloop.closed_loop import format_table, rows_from_steps
from lakeloop.job import JobResult
from lakeloop.pipeline import DAILY_STEPS, StepRecord, job_args_from

__all__ = ["STEPS", "DESCRIPTION", "add_arguments", "run", "main"]

DESCRIPTION = "sample data + the daily pipeline, locally"
NEEDS_SPARK = False  # every step builds (and shares) the session
# job, extra arguments: sample data, then the daily DAG
STEPS: list[tuple[str, list[str]]] = [("datagen", [])] + [(s.name, list(s.extra)) for s in DAILY_STEPS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--days`` and ``--events``; ``--date`` is the first day (default 2026-11-01)."""
    parser.set_defaults(date="2026-11-01")
    parser.add_argument("--days", type=int, default=2, help="consecutive days to run (default 2)")
    parser.add_argument("--events", type=int, default=None, help="events per day (default: conf datagen.events)")


def _print_closed_loop(records: list[StepRecord]) -> None:
    """The per-day model metric and served click-through (see docs/pipeline.md, closed loop)."""
    rows = rows_from_steps(records)
    if rows:
        print("demo: closed loop (model trained each day; reactions to the previous day's served lists)")
        for line in format_table(rows):
            print(f"demo:   {line}")


def _print_realtime(ctx, date: str, user: int = 1) -> None:
    """The speed layer: new events of ``user`` landing in two waves, the stream run after each and
    the real-time view read between them (see docs/streaming.md, demo)."""
    from pyspark.sql import SparkSession

    from lakeloop.streaming.waves import describe, realtime_waves

    t0 = time.monotonic()
    views = realtime_waves(SparkSession.builder.getOrCreate(), ctx.conf, date, user=user)
    print(f"demo: real-time view of user {user} as new events land (stream --trigger availableNow after each wave)")
    for wave, view in enumerate(views, 1):
        print(f"demo:   after wave {wave}: {describe(view)}")
    print(f"demo: stream    {date}  {time.monotonic() - t0:6.1f}s", flush=True)


def run(ctx, spark, args: argparse.Namespace) -> JobResult[list[StepRecord]]:
    """The ``demo`` job: for each day, sample data then every step of the daily DAG, in this process."""
    first = ctx.run_date
    common = job_args_from(args)
    records: list[StepRecord] = []
    for day in range(args.days):
        date = (first + dt.timedelta(days=day)).isoformat()
        for job, extra in STEPS:
            step_args = common + ["--date", date] + extra
            if job == "datagen" and args.events:
                step_args += ["--events", str(args.events)]
            t0 = time.monotonic()
            outcome = cli.execute(job, step_args)
            seconds = time.monotonic() - t0
            print(f"demo: {job:<9} {date}  rc={outcome.exit_code}  {seconds:6.1f}s", flush=True)
            records.append(StepRecord(date, job, "ok" if outcome.exit_code == 0 else "failed", outcome.exit_code,
                                      round(seconds, 3), dict(outcome.summary)))
            if outcome.exit_code != 0:
                print(f"demo: stopped at {job} for {date} (exit code {outcome.exit_code})", file=sys.stderr)
                return JobResult(records, exit_code=outcome.exit_code)
    print(f"demo: ran {len(records)} steps: {', '.join(f'{r.step}@{r.date}' for r in records)}")
    _print_closed_loop(records)
    if args.days > 0:
        _print_realtime(ctx, (first + dt.timedelta(days=args.days - 1)).isoformat())
    return JobResult(records, {"steps": len(records)})


def main(argv: list[str] | None = None) -> int:
    """``demo`` with ``argv``; its exit code."""
    return cli.main("demo", argv)
