"""How a job is started: its parser, its run context and session, and the exit code it ends with.

Every way in goes through here: ``jobs/<name>.py`` under spark-submit (``main(name)``), the pipeline and the
demo in one process (``execute(name, argv)``, which hands back the job's :class:`~lakeloop.job.JobResult`),
and the installed console script ``lakeloop JOB ...`` (:func:`console`), which does what
``./spark-submit.sh JOB ...`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop import deploy_checks, job_status
from lakeloop.conf import ConfError, load_conf
from lakeloop.errors import EXIT_OK, EXIT_USAGE, exit_code_for
from lakeloop.job import JobResult, build_parser, job_module, job_names, job_parser
from lakeloop.session import RunContext, build_session, configure_logging, parse_run_date

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["job_parser", "build_parser", "context_from_args", "Outcome", "execute", "main", "run_job", "console"]

JobBody = Callable[[RunContext, "SparkSession", argparse.Namespace], "JobResult | int | None"]


@dataclass
class Outcome:
    """How a job run ended: its exit code and, when it returned one, its result."""

    exit_code: int
    result: JobResult | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return self.result.summary if self.result is not None else {}


def context_from_args(job: str, args: argparse.Namespace) -> RunContext:
    conf = load_conf(args.env, args.overrides, args.conf_dir)
    configure_logging(conf["log_level"], verbose=getattr(args, "verbose", False))
    return RunContext(job=job, conf=conf, run_date=parse_run_date(args.date))


def _outcome(returned: JobResult | int | None) -> Outcome:
    if isinstance(returned, JobResult):
        return Outcome(int(returned.exit_code), returned)
    return Outcome(EXIT_OK if returned is None else int(returned))


def _run(job: str, args: argparse.Namespace, body: JobBody, needs_spark: bool) -> Outcome:
    try:
        ctx = context_from_args(job, args)
        deploy_checks.enforce(ctx.conf, job, args)
    except (ConfError, ValueError) as exc:
        print(f"{job}: {exc}", file=sys.stderr)
        return Outcome(EXIT_USAGE)
    first, last = getattr(args, "first", None), getattr(args, "last", None)
    ctx.log.info("start %s env=%s %s", job, ctx.env, f"dates={first}..{last}" if first else f"date={ctx.date}")
    try:
        spark: Any = build_session(ctx) if needs_spark else None
        outcome = _outcome(body(ctx, spark, args))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a logged exit code
        code = exit_code_for(exc)
        if code == 1:
            ctx.log.exception("%s failed", job)
        else:
            ctx.log.error("%s stopped: %s", job, exc)
        # a job may attach what it did before failing (per-source reports of a failed quality gate)
        partial = getattr(exc, "result", None)
        return Outcome(code, partial if isinstance(partial, JobResult) else None)
    ctx.log.info("done %s", job)
    return outcome


def execute(job: str, argv: Sequence[str] | None = None) -> Outcome:
    """Run ``job`` with ``argv`` in this process; failures are mapped to exit codes (:mod:`lakeloop.errors`).

    >>> execute("ingest", ["--date", "2026-11-01"]).exit_code  # doctest: +SKIP
    0
    """
    module = job_module(job)
    try:
        args = build_parser(job).parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return Outcome(int(exc.code or 0))
    return _run(job, args, module.run, getattr(module, "NEEDS_SPARK", True))


@job_status.reporting
def main(job: str, argv: Sequence[str] | None = None) -> int:
    """The exit code of ``job`` run with ``argv`` (default ``sys.argv[1:]``): the body of ``jobs/<job>.py``."""
    return execute(job, argv).exit_code


@job_status.reporting
def run_job(job: str, argv: Sequence[str] | None, parser: argparse.ArgumentParser, body: JobBody,
            *, needs_spark: bool = True) -> int:
    """Parse ``argv`` with ``parser`` and run ``body`` like a job (for bodies that are not registered jobs)."""
    return _run(job, parser.parse_args(argv), body, needs_spark).exit_code


def _usage() -> str:
    return ("usage: lakeloop JOB [--env ENV] [--set KEY=VALUE ...] [--dry-run] [job options]\n"
            "       lakeloop JOB --help\n\njobs: " + " ".join(job_names()) + "\n")


def console(argv: Sequence[str] | None = None) -> int:
    """The ``lakeloop`` console script: ``lakeloop JOB ...`` does what ``./spark-submit.sh JOB ...`` does
    (the same :func:`lakeloop.submit.main`): jobs run through spark-submit with the env's conf, ``serve`` as a
    plain Python service, ``--dry-run`` prints the command line, ``--help`` the options.
    """
    from lakeloop import submit

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(_usage(), end="", file=sys.stderr)
        return EXIT_USAGE
    if args[0] in ("-h", "--help"):
        print(_usage(), end="")
        return EXIT_OK
    if args[0] not in job_names():
        print(f"lakeloop: unknown job {args[0]!r}\n" + _usage(), end="", file=sys.stderr)
        return EXIT_USAGE
    return submit.main(args)
