"""Deterministic synthetic e-commerce data (users, items, events) with documented bad records.

>>> manifest = generate_day("/tmp/landing", "2026-11-01", events=1000, users=50, items=30,
...                         seed=7, bad_fraction=0.05)  # doctest: +SKIP
>>> manifest["sources"]["events"]["expected_silver"]  # doctest: +SKIP

Files land under ``<landing>/<source>/dt=<date>/part-NNNNN.<jsonl|jsonl.gz|csv>`` with a manifest at
``<landing>/_manifests/dt=<date>.json``; see ``docs/datagen.md`` for the layout and the defect kinds.
The same seed and parameters always give byte-identical files, whether the parts are written in
this process or as Spark tasks (:func:`spark_runner`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from lakeloop.conf import ConfError
from lakeloop.schemas import SourceSchema

from lakeloop_apps.recommender.datagen import files
from lakeloop_apps.recommender.datagen.defects import KINDS, QUARANTINE_KINDS, VALID_KINDS
from lakeloop_apps.recommender.datagen.generator import (
    CHUNK_ROWS,
    SOURCES,
    Task,
    build_manifest,
    make_plan,
    plan_tasks,
    run_task,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["generate_day", "generate", "spark_runner", "day_range", "KINDS", "VALID_KINDS", "QUARANTINE_KINDS",
           "SOURCES"]

Runner = Callable[[Callable[[Task], dict], Sequence[Task]], list]


def _in_process(fn: Callable[[Task], dict], tasks: Sequence[Task]) -> list:
    return [fn(t) for t in tasks]


def spark_runner(spark: SparkSession) -> Runner:
    """Run every part as one Spark task.  ``landing`` must be a filesystem path that the executors
    see under the same name (local disk in local mode, a shared mount on a cluster)."""
    def run(fn: Callable[[Task], dict], tasks: Sequence[Task]) -> list:
        if not tasks:
            return []
        return spark.sparkContext.parallelize(list(tasks), len(tasks)).map(fn).collect()

    return run


def day_range(last: str | dt.date, days: int) -> list[str]:
    """``days`` consecutive ISO dates ending with ``last``."""
    if days < 1:
        raise ConfError(f"datagen: days must be at least 1, got {days}")
    end = dt.date.fromisoformat(last) if isinstance(last, str) else last
    return [(end - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]


def generate(landing: str | os.PathLike[str], dates: Sequence[str], *, events: int, users: int, items: int,
             seed: int, bad_fraction: float, parts: int | None = None, max_part_rows: int = 1_000_000,
             exposures: Mapping[int, Sequence[int]] | None = None, runner: Runner | None = None,
             schemas: Mapping[str, SourceSchema] | None = None, chunk_rows: int = CHUNK_ROWS,
             served: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write the landing files and manifest of each date in ``dates``; returns the manifests.

    Parameters
    ----------
    landing : str or path
        Root of the landing area (a local or shared filesystem path).
    dates : list of str
        ISO dates ``YYYY-MM-DD``.
    events, users, items : int
        Event lines per day (bad records and duplicates included); users and items in the daily
        snapshots.
    seed : int
        Same seed and parameters give byte-identical files.
    bad_fraction : float
        Share of lines with exactly one defect (see ``docs/datagen.md``).
    parts : int, optional
        Number of event files per day; by default ``ceil(events / max_part_rows)``, at least 2.
    max_part_rows : int
        Largest number of lines in one file.
    exposures : dict, optional
        User id -> item ids the user was shown, best first (e.g. yesterday's served recommendations).
        Each date then gets one more events part with the users' reactions (views, clicks, purchases
        drawn by :mod:`lakeloop_apps.recommender.datagen.response`), all good lines, and its manifest a ``reactions``
        entry.  ``{}`` gives an empty reaction part.
    runner : callable, optional
        ``runner(fn, tasks) -> results`` mapping ``fn`` over the part tasks; in this process by
        default, :func:`spark_runner` for Spark tasks.
    schemas : dict, optional
        Source name -> :class:`lakeloop.schemas.SourceSchema` (e.g. from conf with
        :func:`lakeloop.schemas.source_schema`); the project's ``schemas/`` files by default.
    chunk_rows : int
        Lines generated at a time: bounds memory, does not change the files' layout (the bytes do
        depend on it, as each chunk has its own random stream).
    served : dict, optional
        Where the exposures came from (e.g. served date and model version), copied into the
        manifest's ``reactions`` entry.
    """
    landing = files.resolve_landing(landing)
    dates = list(dict.fromkeys(dates))
    for d in dates:
        dt.date.fromisoformat(d)
    plan = make_plan(events=events, users=users, items=items, seed=seed, bad_fraction=bad_fraction, parts=parts,
                     max_part_rows=max_part_rows, exposures=exposures, schemas=schemas, chunk_rows=chunk_rows)
    tasks = plan_tasks(landing, dates, plan)
    results = (runner or _in_process)(partial(run_task, plan), tasks)
    manifests = []
    for d in dates:
        for source in SOURCES:
            keep = [t.name for t in tasks if t.date == d and t.source == source]
            files.remove_stale(files.partition_dir(landing, source, d), keep)
        manifest = build_manifest(plan, d, results)
        if served and "reactions" in manifest:
            manifest["reactions"].update(served)
        files.write_manifest(landing, d, manifest)
        manifests.append(manifest)
    return manifests


def generate_day(landing: str | os.PathLike[str], date: str, *, events: int, users: int, items: int, seed: int,
                 bad_fraction: float, parts: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Write one day's files and manifest; returns the manifest.  See :func:`generate`."""
    return generate(landing, [date], events=events, users=users, items=items, seed=seed,
                    bad_fraction=bad_fraction, parts=parts, **kwargs)[0]
