"""The daily pipeline: ingest -> curate -> validate -> features -> train (+ gate) -> infer, for one date or a range.

Each step is a job (:mod:`lakeloop.job`) run in this process through :func:`lakeloop.cli.execute`, so every
step shares one SparkSession, and the step hands back its result: the figures of the run report and of the
step's marker come from what the step returned, not from files it left behind.
A step that succeeded for a date leaves a completion marker, written atomically::

    <state>/dt=<date>/<step>.json        {"run_id", "step", "date", "finished_at", "summary"}

and is skipped by later runs of that date unless ``--force`` is given: a failed run resumes at the step
that failed.  ``<state>`` is ``<warehouse>/_state/pipeline`` (``--state-dir`` for a warehouse that is not on
a local filesystem, e.g. HDFS).  The same folder holds the run lock (``lock``, created with ``O_EXCL``), so
two pipeline runs of one environment never overlap (:mod:`lakeloop.runlock`).

Exit codes (:mod:`lakeloop.errors`): 0 done, 1 a step failed unexpectedly, 2 usage or lock held,
3 a data-quality gate failed (curate quarantine rate, validate drift), 4 the model gate refused the
challenger.  A refused gate stops the day before ``infer``: the ``@champion`` alias did not move, so the
serving store keeps the champion's last published version; the train step gets no marker, so a re-run of
the date trains again.  A backfill stops at the first date that does not finish.

Every run writes ``<warehouse>/_reports/pipeline/<run_id>.json`` and ``.html`` (through
:mod:`lakeloop.reports`, so on any storage the tables use), with a closed-loop table: per date the trained
model's holdout metric, the gate decision and the click-through of the served lists in the next day's
landing data (:mod:`lakeloop.closed_loop`).  ``--datagen`` runs the ``datagen`` job as each date's first
step (the closed-loop simulation); the pipeline knows it only by its job name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lakeloop import cli, closed_loop
from lakeloop.conf import Conf, ConfError
from lakeloop.errors import EXIT_GATE_REFUSED, EXIT_OK, exit_code_for
from lakeloop.job import JOBS, JobResult, add_range_arguments, date_range, date_summaries, run_dates
from lakeloop.lake import Lake
from lakeloop.reports import Documents
from lakeloop.runlock import PipelineLocked, RunLock
from lakeloop.session import log_dir, log_to_file, quiet_console

__all__ = ["Step", "DAILY_STEPS", "DATAGEN_STEP", "PipelineLocked", "StepRecord", "PipelineRun", "load_job",
           "date_range", "marker_name", "state_dir", "RunLock", "run_pipeline", "add_arguments", "run", "write_report",
           "step_started", "step_finished"]

JobMain = Callable[[Sequence[str]], "cli.Outcome | int"]


@dataclass(frozen=True)
class Step:
    """One node of the DAG: the job ``name`` (or ``main`` when given) with extra arguments.

    A ``ranged`` step's job takes ``--from/--to``: a backfill runs it once over its dates, not once per date.
    """

    name: str
    extra: tuple[str, ...] = ()
    main: JobMain | None = None
    ranged: bool = False

    def runner(self) -> JobMain:
        if self.main is not None:
            return self.main
        job = load_job(self.name)
        if job is None:
            raise ConfError(f"pipeline step {self.name!r}: no such job ({', '.join(sorted(JOBS))})")
        return job.execute


# jobs that run a range of dates in one call (lakeloop.job.add_range_arguments)
RANGE_JOBS = ("ingest", "curate", "validate", "features")
DAILY_STEPS: tuple[Step, ...] = tuple(Step(n, ranged=n in RANGE_JOBS) for n in ("ingest", "curate", "validate",
                                                                              "features", "train", "infer"))
# with --datagen, first step of every date: the date's sample data (reacting to the day before's served lists)
DATAGEN_STEP = Step("datagen")


@dataclass(frozen=True)
class JobEntry:
    """A job run in this process: ``main`` gives its exit code, ``execute`` its :class:`~lakeloop.cli.Outcome`."""

    name: str

    def main(self, argv: Sequence[str]) -> int:
        return cli.main(self.name, argv)

    def execute(self, argv: Sequence[str]) -> cli.Outcome:
        return cli.execute(self.name, argv)


def load_job(job: str) -> JobEntry | None:
    """The job ``job`` of :data:`lakeloop.job.JOBS`, or None when there is no such job."""
    return JobEntry(job) if job in JOBS else None


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _local_dir(uri: str, what: str) -> Path:
    if "://" in uri and not uri.startswith("file://"):
        raise ConfError(f"{what} {uri!r} is not on a local filesystem: give the pipeline --state-dir")
    return Path(uri.removeprefix("file://"))


def state_dir(conf: Conf, override: str | None = None) -> Path:
    """Where markers and the lock live: ``override`` or ``<warehouse>/_state/pipeline``."""
    if override:
        return Path(override).expanduser().resolve()
    return _local_dir(conf.path("warehouse"), "warehouse") / "_state" / "pipeline"


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class StepRecord:
    """What one step did for one date."""

    date: str
    step: str
    status: str  # ok | skipped | failed | not_run
    exit_code: int | None = None
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineRun:
    """The outcome of a pipeline run: one record per (date, step) and the process exit code."""

    run_id: str
    env: str
    dates: list[str]
    started_at: str
    finished_at: str = ""
    exit_code: int = EXIT_OK
    steps: list[StepRecord] = field(default_factory=list)
    stale_lock: dict[str, Any] | None = None
    closed_loop: list[dict[str, Any]] = field(default_factory=list)
    closed_loop_columns: dict[str, str] = field(default_factory=dict)  # conf closed_loop.reactions
    log_file: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _marker(state: Path, date: str, step: str) -> Path:
    return state / f"dt={date}" / f"{step}.json"


def marker_name(conf: Conf, step: Step) -> str:
    """The name of ``step``'s marker: the step, and for ``train`` the model it trains when one is named
    (``--model`` in its arguments, else conf ``train.model``), so that a run of one model never takes another
    model's finished training for its own."""
    if step.name != "train":
        return step.name
    extra = list(step.extra)
    model = extra[extra.index("--model") + 1] if "--model" in extra[:-1] else conf.get("train.model")
    return f"{step.name}@{model}" if model else step.name


def _run_step(step: Step, argv: list[str]) -> tuple[int, float, dict[str, Any]]:
    """Exit code, seconds and the summary the step returned."""
    t0 = time.monotonic()
    summary: dict[str, Any] = {}
    try:
        returned = step.runner()(argv)
    except Exception as exc:  # noqa: BLE001 - a step that raises instead of returning a code still fails
        print(f"pipeline: step {step.name} raised {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        returned = exit_code_for(exc)
    if isinstance(returned, cli.Outcome):
        rc, summary = returned.exit_code, dict(returned.summary)
    else:
        rc = int(returned or 0)
    return rc, round(time.monotonic() - t0, 3), summary


def run_pipeline(conf: Conf, dates: Sequence[dt.date], job_args: Sequence[str], run_id: str, *,
                 steps: Sequence[Step] = DAILY_STEPS, force: bool = False, state: Path | None = None,
                 log: Callable[[str], None] | None = None) -> PipelineRun:
    """Run ``steps`` for each date in order under the run lock; the first step that fails stops the run.

    ``job_args`` are passed to every step before ``--date`` (``--env``, ``--set``, ``--conf-dir``).  With
    several dates, the leading :attr:`Step.ranged` steps run once over the dates (``--from/--to``; each date
    still gets its own record and marker), then the other steps date by date, only for the dates before the
    first date a ranged step failed.
    """
    state = state or state_dir(conf)
    log = log or (lambda line: print(line, flush=True))
    result = PipelineRun(run_id=run_id, env=conf.env, dates=[d.isoformat() for d in dates], started_at=_utcnow())
    lock = RunLock(state / "lock", run_id)
    ranged = _ranged_prefix(steps) if len(dates) > 1 else 0
    with lock.held():
        result.stale_lock = lock.stale
        days = [d.isoformat() for d in dates]
        for i, step in enumerate(steps[:ranged]):
            days, failed = _ranged_step(conf, state, step, days, list(job_args), run_id, force, result, log)
            if failed is not None:
                result.steps += [StepRecord(failed, s.name, "not_run") for s in steps[i + 1:]]
                for later in steps[i + 1:ranged]:  # the dates before the failure go on
                    days, _ = _ranged_step(conf, state, later, days, list(job_args), run_id, force, result, log)
                break
        _daily_steps(conf, state, steps[ranged:], days, list(job_args), run_id, force, result, log)
        if ranged:
            order = {s.name: i for i, s in enumerate(steps)}
            result.steps.sort(key=lambda r: (r.date, order.get(r.step, len(order))))
    result.finished_at = _utcnow()
    return result


def _ranged_prefix(steps: Sequence[Step]) -> int:
    """How many leading steps run over a whole range (none when a step that is not ranged comes first: the
    closed-loop ``datagen`` needs the day before's served lists, so such a run goes date by date)."""
    n = 0
    while n < len(steps) and steps[n].ranged:
        n += 1
    return n


def _daily_steps(conf: Conf, state: Path, steps: Sequence[Step], days: Sequence[str], job_args: list[str],
                 run_id: str, force: bool, result: PipelineRun, log: Callable[[str], None]) -> None:
    for date in days:
        for i, step in enumerate(steps):
            log(step_started("pipeline", date, step.name))
            record = _step_for_date(conf, state, step, date, job_args, run_id, force)
            result.steps.append(record)
            log(step_finished("pipeline", record))
            if record.status == "failed":
                result.exit_code = record.exit_code or 1
                result.steps += [StepRecord(date, s.name, "not_run") for s in steps[i + 1:]]
                return


def _spans(days: Sequence[str]) -> list[list[str]]:
    """``days`` in runs of consecutive dates."""
    spans: list[list[str]] = []
    for day in days:
        if spans and dt.date.fromisoformat(day) - dt.date.fromisoformat(spans[-1][-1]) == dt.timedelta(days=1):
            spans[-1].append(day)
        else:
            spans.append([day])
    return spans


def _ranged_step(conf: Conf, state: Path, step: Step, days: list[str], job_args: list[str], run_id: str,
                 force: bool, result: PipelineRun, log: Callable[[str], None]) -> tuple[list[str], str | None]:
    """Run ``step`` once per span of consecutive ``days`` not done yet (each date gets its record, and its
    marker when it is done); returns the dates the next steps get (those before the first date that failed)
    and that date (None: none failed)."""
    records: dict[str, StepRecord] = {}
    for date in days:
        marker = _marker(state, date, marker_name(conf, step))
        if not force and marker.is_file():
            done = _read_json(marker) or {}
            records[date] = StepRecord(date, step.name, "skipped", summary={"completed_by": done.get("run_id"),
                                                                             **done.get("summary", {})})
    for span in _spans([d for d in days if d not in records]):
        label = span[0] if len(span) == 1 else f"{span[0]}..{span[-1]}"
        log(step_started("pipeline", label, step.name))
        for date in span:
            _marker(state, date, marker_name(conf, step)).unlink(missing_ok=True)
        dates = ["--date", span[0]] if len(span) == 1 else ["--from", span[0], "--to", span[-1]]
        rc, seconds, summary = _run_step(step, job_args + dates + list(step.extra))
        failed = set(span) if rc != EXIT_OK else set()
        if rc != EXIT_OK and summary.get("failed"):
            failed = set(summary["failed"])
        per_date = date_summaries(summary, span)
        share = round(seconds / len(span), 3)
        for date in span:
            extra = {"range": label, "range_seconds": seconds} if len(span) > 1 else {}
            if date in failed:
                records[date] = StepRecord(date, step.name, "failed", rc, share, {**per_date[date], **extra})
                continue
            records[date] = StepRecord(date, step.name, "ok", EXIT_OK, share, {**per_date[date], **extra})
        for date in span:
            log(step_finished("pipeline", records[date]))
        if failed:
            break
    first_bad = next((d for d in days if records[d].status == "failed"), None) if records else None
    for date in days:
        record = records.get(date) or StepRecord(date, step.name, "not_run")
        if record.status == "ok":  # also a date after the first failure that the same call finished
            _write_json_atomic(_marker(state, date, marker_name(conf, step)), {
                "run_id": run_id, "step": step.name, "date": date, "finished_at": _utcnow(),
                "seconds": record.seconds, "summary": record.summary})
        result.steps.append(record)
    if first_bad is None:
        return days, None
    result.exit_code = records[first_bad].exit_code or 1
    return [d for d in days if d < first_bad], first_bad


def step_started(prefix: str, date: str, step: str) -> str:
    """The console line printed when a step starts."""
    return f"{prefix}: {date} {step:<9} started"


def step_finished(prefix: str, record: StepRecord) -> str:
    """The console line printed when a step ends: status, exit code, rows in/out (where the step reports
    them, :func:`lakeloop.report_charts.step_rows`) and seconds."""
    from lakeloop.report_charts import step_rows

    rows_in, rows_out = step_rows(record.step, record.summary) if record.status != "skipped" else (None, None)
    rows = "".join(f" rows {side} {n:,}" for side, n in (("in", rows_in), ("out", rows_out)) if n is not None)
    code = "" if record.exit_code is None else f" rc={record.exit_code}"
    return f"{prefix}: {record.date} {record.step:<9} {record.status:<7}{code} {record.seconds:6.1f}s{rows}"


def _step_for_date(conf: Conf, state: Path, step: Step, date: str, job_args: list[str], run_id: str,
                   force: bool) -> StepRecord:
    marker = _marker(state, date, marker_name(conf, step))
    if not force and marker.is_file():
        done = _read_json(marker) or {}
        return StepRecord(date, step.name, "skipped", summary={"completed_by": done.get("run_id"),
                                                               **done.get("summary", {})})
    marker.unlink(missing_ok=True)
    rc, seconds, summary = _run_step(step, job_args + ["--date", date, *step.extra])
    if rc != EXIT_OK:
        if rc == EXIT_GATE_REFUSED:
            summary["note"] = "gate refused: @champion unchanged, infer not run, serving keeps the champion's scores"
        return StepRecord(date, step.name, "failed", rc, seconds, summary)
    _write_json_atomic(marker, {"run_id": run_id, "step": step.name, "date": date, "finished_at": _utcnow(),
                                "seconds": seconds, "summary": summary})
    return StepRecord(date, step.name, "ok", rc, seconds, summary)


def report_dir(conf: Conf) -> Documents:
    """``<warehouse>/_reports/pipeline``, on whatever storage the warehouse is."""
    return Documents.reports(Lake.from_conf(conf), "pipeline")


def write_report(run: PipelineRun, folder: Documents | Path | str, conf: Conf | None = None,
                 ) -> tuple[Path | str, Path | str]:
    """Write the run report as ``<run_id>.json`` and a self-contained ``<run_id>.html`` (with ``conf``: the
    trained models' curves and plots from its MLflow store too); returns where they are (paths on the local
    filesystem, else URIs)."""
    from lakeloop.report_html import render_pipeline_run

    docs = folder if isinstance(folder, Documents) else Documents(str(folder))
    payload = run.as_dict()
    models, command = [], None
    if conf is not None:
        from lakeloop.report_models import mlflow_ui_command, model_figures, trained_models
        from lakeloop.train.registry import tracking_uri

        trained = trained_models(run.steps)
        models = model_figures(tracking_uri(conf), trained) if trained else []
        command = mlflow_ui_command(tracking_uri(conf))
    return (docs.write_json(f"{run.run_id}.json", payload),
            docs.write_text(f"{run.run_id}.html", render_pipeline_run(payload, models, mlflow_command=command)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_range_arguments(parser)
    parser.add_argument("--force", action="store_true", help="re-run steps already completed for the date")
    parser.add_argument("--step", dest="steps", action="append", default=None, metavar="NAME",
                        help="run only these steps, in DAG order (repeatable; default: all)")
    parser.add_argument("--datagen", action="store_true",
                        help="generate the date's sample data first (closed-loop simulation, demo and bench)")
    parser.add_argument("--source", action="append", default=None, metavar="NAME",
                        help="only these sources (repeatable): ingest and curate them, validate their silver tables "
                             "(default: every source in conf)")
    parser.add_argument("--state-dir", default=None,
                        help="markers and lock folder (default <warehouse>/_state/pipeline; needed for HDFS)")


def _dates(ctx, args: argparse.Namespace) -> list[dt.date]:
    return run_dates(ctx.run_date, args)


def _selected(names: Sequence[str] | None, datagen: bool = False) -> tuple[Step, ...]:
    steps = ((DATAGEN_STEP,) if datagen else ()) + DAILY_STEPS
    if not names:
        return steps
    known = [s.name for s in steps]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfError(f"--step {', '.join(unknown)}: not a pipeline step ({', '.join(known)})")
    return tuple(s for s in steps if s.name in names)


def for_sources(steps: Sequence[Step], sources: Sequence[str] | None) -> tuple[Step, ...]:
    """``steps`` with ``--source`` given to the source-aware steps (``validate``: their silver tables)."""
    if not sources:
        return tuple(steps)
    per_step = {"ingest": [x for s in sources for x in ("--source", s)],
                "curate": [x for s in sources for x in ("--source", s)],
                "validate": [x for s in sources for x in ("--table", f"silver.{s}")]}
    return tuple(Step(s.name, (*s.extra, *per_step.get(s.name, ())), s.main, s.ranged) for s in steps)


def job_args_from(args: argparse.Namespace) -> list[str]:
    """The ``--env``/``--set``/``--conf-dir`` arguments every step gets."""
    out = ["--env", args.env] + [x for o in args.overrides for x in ("--set", o)]
    out += ["--verbose"] if getattr(args, "verbose", False) else []
    return out + (["--conf-dir", args.conf_dir] if args.conf_dir else [])


DESCRIPTION = "the daily DAG for --date, or a backfill --from/--to"
NEEDS_SPARK = False  # the steps build (and share) the session


def run(ctx, spark, args: argparse.Namespace, *, steps: Sequence[Step] | None = None) -> JobResult[PipelineRun]:
    """The ``pipeline`` job: run the DAG, write the run report; the run's exit code is the job's."""
    state = state_dir(ctx.conf, args.state_dir)
    dates = _dates(ctx, args)
    with log_to_file(log_dir(ctx.conf) / f"{ctx.run_id}.log") as log_file, quiet_console():
        print(f"pipeline: run {ctx.run_id}; every step's log lines go to {log_file}", flush=True)
        result = run_pipeline(ctx.conf, dates, job_args_from(args), ctx.run_id,
                              steps=steps or for_sources(_selected(args.steps, args.datagen), args.source),
                              force=args.force, state=state)
        result.log_file = str(log_file)
    result.closed_loop = closed_loop.rows_from_steps(result.steps)
    result.closed_loop_columns = dict(ctx.conf["closed_loop.reactions"])
    for line in closed_loop.format_table(result.closed_loop, result.closed_loop_columns) if result.closed_loop else ():
        print(f"pipeline: {line}", flush=True)
    json_path, html_path = write_report(result, report_dir(ctx.conf), ctx.conf)
    print(f"pipeline: run {ctx.run_id} exit code {result.exit_code}; report {json_path} {html_path}", flush=True)
    return JobResult(result, {"dates": result.dates, "exit_code": result.exit_code}, exit_code=result.exit_code)
