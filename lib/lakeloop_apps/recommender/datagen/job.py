"""The ``datagen`` job's options and body (``jobs/datagen.py`` only wires them to :mod:`lakeloop.cli`)."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING

from lakeloop.job import JobResult
from lakeloop.schemas import source_schema

from lakeloop_apps.recommender.datagen import SOURCES, day_range, generate, spark_runner

if TYPE_CHECKING:
    from lakeloop.session import RunContext
    from pyspark.sql import SparkSession

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--events/--users/--items/--seed/--bad-fraction`` (defaults: conf ``datagen.*``), ``--days``."""
    parser.add_argument("--events", type=int, default=None, help="event lines per day (default: datagen.events)")
    parser.add_argument("--users", type=int, default=None, help="users in the snapshot (default: datagen.users)")
    parser.add_argument("--items", type=int, default=None, help="items in the catalog (default: datagen.items)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: datagen.seed)")
    parser.add_argument("--bad-fraction", type=float, default=None,
                        help="share of lines with one defect (default: datagen.bad_fraction)")
    parser.add_argument("--days", type=int, default=1, help="consecutive days ending with --date (default 1)")
    parser.add_argument("--parts", type=int, default=None, help="event files per day (default: by size)")
    parser.add_argument("--max-part-rows", type=int, default=1_000_000, help="largest file, in lines")


def _option(args: argparse.Namespace, ctx: RunContext, name: str):
    value = getattr(args, name)
    return ctx.conf[f"datagen.{name}"] if value is None else value


def _exposures(spark: SparkSession, ctx: RunContext, date: str, users: int, items: int):
    """Exposures and their origin for ``date``: the lists served the day before, or None (closed loop off,
    or nothing served that day)."""
    if not ctx.conf["datagen.closed_loop"]:
        return None, None
    from lakeloop_apps.recommender.datagen.served import served_lists

    served = served_lists(spark, ctx.conf, dt.date.fromisoformat(date) - dt.timedelta(days=1), users, items)
    return (None, None) if served is None else (dict(served), served.info)


DESCRIPTION = "synthetic landing files and their manifest for --date"


def run(ctx: RunContext, spark: SparkSession, args: argparse.Namespace) -> JobResult[list[dict]]:
    """The ``datagen`` job: one day after another (a day's exposures are the lists served the day before)."""
    dates = day_range(ctx.run_date, args.days)
    landing = ctx.conf.path("landing")
    opts = {name: _option(args, ctx, name) for name in ("events", "users", "items", "seed", "bad_fraction")}
    schemas = {s: source_schema(ctx.conf, s) for s in SOURCES}
    manifests = []
    for date in dates:  # one at a time: a date's exposures come from the day before
        exposures, served = _exposures(spark, ctx, date, opts["users"], opts["items"])
        (m,) = generate(landing, [date], **opts, parts=args.parts, max_part_rows=args.max_part_rows,
                        runner=spark_runner(spark), schemas=schemas, exposures=exposures, served=served)
        summary = ", ".join(f"{s} {v['rows']} rows ({v['rows'] - v['counts']['good']} bad)"
                            for s, v in m["sources"].items())
        ctx.log.info("datagen %s into %s: %s", m["date"], landing, summary)
        if "reactions" in m:
            r = m["reactions"]
            ctx.log.info("datagen %s: %d reaction events to %d items served on %s (CTR %s)", date, r["events"],
                         r["served_items"], r["served_date"], r["ctr"])
        manifests.append(m)
    last = manifests[-1]
    summary = {"events": last["sources"].get("events", {}).get("rows"), "reactions": last.get("reactions")}
    return JobResult(manifests, {k: v for k, v in summary.items() if v is not None})
