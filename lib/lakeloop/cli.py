"""Argument handling shared by every job in ``jobs/``.

A job module is::

    def main(argv=None):
        parser = cli.job_parser("ingest", "landing files -> bronze")
        parser.add_argument(...)
        return cli.run_job("ingest", argv, parser, body)

where ``body(ctx, spark, args)`` holds no logic of its own beyond calling the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lakeloop import deploy_checks, job_status
from lakeloop.conf import ConfError, load_conf
from lakeloop.errors import EXIT_OK, EXIT_USAGE, exit_code_for
from lakeloop.session import RunContext, build_session, configure_logging, parse_run_date

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["job_parser", "context_from_args", "run_job"]

JobBody = Callable[[RunContext, "SparkSession", argparse.Namespace], "int | None"]


def job_parser(job: str, description: str) -> argparse.ArgumentParser:
    """A parser with the options every job takes: --env, --set, --conf-dir, --date."""
    p = argparse.ArgumentParser(prog=job, description=description)
    p.add_argument("--env", default="local", help="conf/<env>.yaml merged over conf/base.yaml (default: local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a conf key, e.g. --set spark.executor.memory=8g (repeatable)")
    p.add_argument("--conf-dir", default=None, help="directory holding base.yaml (default: ./conf)")
    p.add_argument("--date", default=None, help="run date YYYY-MM-DD (default: today, UTC)")
    return p


def context_from_args(job: str, args: argparse.Namespace) -> RunContext:
    conf = load_conf(args.env, args.overrides, args.conf_dir)
    configure_logging(conf.get("log_level", "WARN"))
    return RunContext(job=job, conf=conf, run_date=parse_run_date(args.date))


@job_status.reporting
def run_job(job: str, argv: Sequence[str] | None, parser: argparse.ArgumentParser, body: JobBody,
            *, needs_spark: bool = True) -> int:
    """Parse ``argv``, load conf, build the session, run ``body`` and map failures to exit codes.

    Returns the process exit code (see :mod:`lakeloop.errors`).
    """
    args = parser.parse_args(argv)
    try:
        ctx = context_from_args(job, args)
        deploy_checks.enforce(ctx.conf, job, args)
    except (ConfError, ValueError) as exc:
        print(f"{job}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    ctx.log.info("start %s env=%s date=%s", job, ctx.env, ctx.date)
    try:
        spark: Any = build_session(ctx) if needs_spark else None
        rc = body(ctx, spark, args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a logged exit code
        code = exit_code_for(exc)
        if code == 1:
            ctx.log.exception("%s failed", job)
        else:
            ctx.log.error("%s stopped: %s", job, exc)
        return code
    ctx.log.info("done %s", job)
    return EXIT_OK if rc is None else int(rc)
