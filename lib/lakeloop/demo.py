"""The demo: sample data for a few days, then every pipeline step that exists, in order, and last
the speed layer: new events landing in two waves, the real-time view read after each.

Each step is a job run in this process through :func:`lakeloop.cli.execute`, so they share one SparkSession.
The console gets one line when a step starts and one when it ends (rows in/out, seconds); every step's
own log lines go to ``<warehouse>/_logs/<run_id>.log``.  The demo writes a run report like the pipeline's
(``<warehouse>/_reports/demo/<run_id>.json`` and ``.html``, charts included) and ends with where to look:
the report, the ``mlflow ui`` command of its MLflow store, ``serve`` with a ``curl`` for a served user,
the notebook.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

from lakeloop import cli
from lakeloop.closed_loop import format_table, rows_from_steps
from lakeloop.job import JobResult
from lakeloop.lake import Lake
from lakeloop.pipeline import (
    DAILY_STEPS,
    PipelineRun,
    StepRecord,
    job_args_from,
    step_finished,
    step_started,
    write_report,
)
from lakeloop.reports import Documents
from lakeloop.session import log_dir, log_to_file, quiet_console

__all__ = ["STEPS", "DESCRIPTION", "add_arguments", "run", "main", "where_to_look"]

DESCRIPTION = "sample data + the daily pipeline, locally"
NEEDS_SPARK = False  # every step builds (and shares) the session
# job, extra arguments: sample data, then the daily DAG
STEPS: list[tuple[str, list[str]]] = [("datagen", [])] + [(s.name, list(s.extra)) for s in DAILY_STEPS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--days`` and ``--events``; ``--date`` is the first day (default 2026-11-01)."""
    parser.set_defaults(date="2026-11-01")
    parser.add_argument("--days", type=int, default=2, help="consecutive days to run (default 2)")
    parser.add_argument("--events", type=int, default=None, help="events per day (default: conf datagen.events)")


def _print_closed_loop(rows: list[dict], reactions: dict[str, str]) -> None:
    """The per-day model metric and served click-through (see docs/pipeline.md, closed loop)."""
    if rows:
        print("demo: closed loop (model trained each day; reactions to the previous day's served lists)")
        for line in format_table(rows, reactions):
            print(f"demo:   {line}")


def _print_realtime(ctx, date: str, user: int = 1) -> None:
    """The speed layer: new events of ``user`` landing in two waves, the stream run after each and
    the real-time view read between them (see docs/streaming.md, demo)."""
    from lakeloop_apps.recommender.waves import describe, realtime_waves
    from pyspark.sql import SparkSession

    print(step_started("demo", date, "stream"), flush=True)
    t0 = time.monotonic()
    views = realtime_waves(SparkSession.builder.getOrCreate(), ctx.conf, date, user=user)
    print(f"demo: real-time view of user {user} as new events land (stream --trigger availableNow after each wave)")
    for wave, view in enumerate(views, 1):
        print(f"demo:   after wave {wave}: {describe(view)}")
    print(step_finished("demo", StepRecord(date, "stream", "ok", 0, round(time.monotonic() - t0, 3))), flush=True)


def _served_user(conf, preferred: int) -> int | None:
    """A user the serving store answers for: ``preferred`` when it has a list, else the first user of the
    predictions table; None when nothing is served."""
    from pyspark.sql import SparkSession

    from lakeloop.lake import Lake
    from lakeloop.serving import open_store
    from lakeloop.train.spec import model_conf

    with open_store(conf) as store:
        if store.lookup(preferred) is not None:
            return preferred
        lake = Lake.from_conf(conf)
        if not lake.exists(conf["infer.table"]):
            return None
        spark = SparkSession.builder.getOrCreate()
        key = model_conf(conf).scoring.serving.key
        for row in lake.read(spark, conf["infer.table"]).select(key).distinct().orderBy(key).take(20):
            if store.lookup(row[0]) is not None:
                return int(row[0])
    return None


def where_to_look(conf, args: argparse.Namespace, report: Path | str, log_file: Path, user: int | None) -> list[str]:
    """The closing block: the run report, the MLflow UI, the lookup API with a real user, the notebook."""
    from lakeloop.report_models import mlflow_ui_command
    from lakeloop.train.registry import tracking_uri

    options = " ".join(shlex.quote(a) for a in job_args_from(args) if a != "--verbose")
    options = "" if options == "--env local" else f" {options}"
    lines = [f"run report  {report}  (one HTML file: open it in a browser, works offline)",
             f"MLflow      {mlflow_ui_command(tracking_uri(conf))}   then http://127.0.0.1:5000",
             f"serving     ./spark-submit.sh serve --port 8080{options}"]
    if user is not None:
        route = next(iter(conf["serve.routes"]), "predictions")  # the app's first lookup route
        lines.append(f"            curl http://127.0.0.1:8080/v1/{route}/{user}")
    jupyter = Path(sys.executable).with_name("jupyter")
    jupyter_cmd = shlex.quote(str(jupyter)) if jupyter.is_file() else "jupyter"
    lines += [f"notebook    LAKELOOP_WAREHOUSE={shlex.quote(conf.path('warehouse'))} {jupyter_cmd} lab "
              "notebooks/analysis.ipynb  (./setup.sh notebook installs JupyterLab; Zeppelin: notebooks/analysis.zpln)",
              f"full log    {log_file}"]
    return ["demo: where to look"] + [f"demo:   {line}" for line in lines]


def _run_steps(ctx, args: argparse.Namespace, records: list[StepRecord]) -> int:
    """Sample data then the daily DAG for each day, one line when a step starts and one when it ends."""
    common = job_args_from(args)
    for day in range(args.days):
        date = (ctx.run_date + dt.timedelta(days=day)).isoformat()
        for job, extra in STEPS:
            step_args = common + ["--date", date] + extra
            if job == "datagen" and args.events:
                step_args += ["--events", str(args.events)]
            print(step_started("demo", date, job), flush=True)
            t0 = time.monotonic()
            outcome = cli.execute(job, step_args)
            record = StepRecord(date, job, "ok" if outcome.exit_code == 0 else "failed", outcome.exit_code,
                                round(time.monotonic() - t0, 3), dict(outcome.summary))
            records.append(record)
            print(step_finished("demo", record), flush=True)
            if outcome.exit_code != 0:
                print(f"demo: stopped at {job} for {date} (exit code {outcome.exit_code})", file=sys.stderr)
                return outcome.exit_code
    return 0


def run(ctx, spark, args: argparse.Namespace) -> JobResult[list[StepRecord]]:
    """The ``demo`` job: for each day, sample data then every step of the daily DAG, in this process; then
    the speed layer, the run report (``<warehouse>/_reports/demo/<run_id>.html``) and where to look."""
    first = ctx.run_date
    dates = [(first + dt.timedelta(days=d)).isoformat() for d in range(args.days)]
    run = PipelineRun(run_id=ctx.run_id, env=ctx.env, dates=dates,
                      started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    with log_to_file(log_dir(ctx.conf) / f"{ctx.run_id}.log") as log_file, quiet_console():
        print(f"demo: run {ctx.run_id}, {args.days} day(s) from {first}; every step's log lines go to {log_file}")
        run.log_file = str(log_file)
        run.exit_code = _run_steps(ctx, args, run.steps)
        run.closed_loop = rows_from_steps(run.steps)
        run.closed_loop_columns = dict(ctx.conf["closed_loop.reactions"])
        if run.exit_code == 0:
            _print_closed_loop(run.closed_loop, run.closed_loop_columns)
            if dates:
                _print_realtime(ctx, dates[-1])
        run.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        _, html = write_report(run, Documents.reports(Lake.from_conf(ctx.conf), "demo"), ctx.conf)
        user = _served_user(ctx.conf, 1) if run.exit_code == 0 else None
    for line in where_to_look(ctx.conf, args, html, log_file, user):
        print(line)
    return JobResult(run.steps, {"steps": len(run.steps), "report": str(html)}, exit_code=run.exit_code)
def main(argv: list[str] | None = None) -> int:
    """``demo`` with ``argv``; its exit code."""
    return cli.main("demo", argv)
