"""The features job: every declared feature set and training set of a run date into its gold table.

Each input table is read once per run (only the ``dt`` partitions some feature, label or dimension
needs, when the table has a ``dt`` column) and persisted while the outputs are computed.  Each
output replaces its ``dt = run date`` partition (idempotent).  An output with 0 rows for a date
whose inputs have rows is refused with :class:`~lakeloop.errors.DataQualityError` (exit code 3)
unless its spec says ``allow_empty: true``; the table is then restored to the version before the
write, so a refused run leaves no empty partition behind.

A range of dates (``--from/--to``) reads each input once for the whole range; every date is still
computed as of its own time and replaces its own partition.  A re-run is decided before any data is
read: an output whose date was built from the same input partitions (their data files, from the Delta
logs) and the same spec, and whose own partition is still the one written then, is skipped (its marker
under ``_reports/features/<table>/dt=<date>.json``).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloop.errors import DataQualityError
from lakeloop.featuresets import decay, labels, training
from lakeloop.featuresets.compute import compute
from lakeloop.featuresets.load import load_specs
from lakeloop.featuresets.scope import Scope, T, day_start, micros, ts_literal
from lakeloop.featuresets.sets import output_names
from lakeloop.featuresets.spec import FeatureSet, Specs, TrainingSpec
from lakeloop.featuresets.training import training_frame

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.delta.write import WriteResult
    from lakeloop.lake import Lake
    from lakeloop.reports import Documents

__all__ = ["Bounds", "Inputs", "set_time", "plan_bounds", "feature_frame", "range_frame",
           "build_all", "build_range"]

log = logging.getLogger(__name__)
PARTITION = "dt"
TRAINING_DATES_PER_PASS = 31
_DAY = dt.timedelta(days=1)


def set_time(fs: FeatureSet, run_date: dt.date) -> dt.datetime:
    """The ``t`` a gold feature table of ``run_date`` is computed as of."""
    return day_start(run_date) + (_DAY if fs.as_of == "end_of_day" else dt.timedelta(0))


@dataclass
class Bounds:
    """``dt`` partitions to read per table: ``[lo, hi]``, ``lo`` None for no lower bound."""

    ranges: dict[str, tuple[dt.date | None, dt.date]] = field(default_factory=dict)

    def merge(self, other: Bounds) -> None:
        for table, (lo, hi) in other.ranges.items():
            self.add(table, lo, hi)

    def add(self, table: str, lo: dt.date | None, hi: dt.date) -> None:
        if table in self.ranges:
            old_lo, old_hi = self.ranges[table]
            lo = None if lo is None or old_lo is None else min(lo, old_lo)
            hi = max(hi, old_hi)
        self.ranges[table] = (lo, hi)


def _add_set(bounds: Bounds, fs: FeatureSet, first_t: dt.datetime | None, last_t: dt.datetime) -> None:
    """A late row may sit in the partition of the day after its event time: one day of margin.  ``first_t`` None:
    no lower bound."""
    bounds.add(fs.source, None if first_t is None else (first_t - fs.max_window).date() - _DAY, last_t.date())
    for dim in fs.dimensions.values():
        bounds.add(dim.table, None, last_t.date())


def plan_bounds(sets: list[FeatureSet], trainings: list[TrainingSpec], all_sets: dict[str, FeatureSet],
                run_date: dt.date) -> Bounds:
    bounds = Bounds()
    for fs in sets:
        t = set_time(fs, run_date)
        _add_set(bounds, fs, t, t)
    for ts in trainings:
        t = labels.label_time(ts.label, run_date)
        first, last = (t, t) if t is not None else (day_start(run_date), day_start(run_date) + _DAY)
        label_end = last + (ts.label.window or dt.timedelta(0))
        bounds.add(ts.label.source, first.date() - _DAY, label_end.date())
        if ts.label.select == "partition":  # a batch's label times may lie any time before its partition
            first = None
        if ts.negatives is not None:
            bounds.add(ts.negatives.pool.table, None, label_end.date())
        for join in ts.joins:
            _add_set(bounds, all_sets[join.set], first, label_end)
    return bounds


class Inputs:
    """Reads each table once (its planned ``dt`` range), persisted until :meth:`close`."""

    def __init__(self, spark: SparkSession, lake: Lake, bounds: Bounds) -> None:
        self.spark, self.lake, self.bounds = spark, lake, bounds
        self._frames: dict[str, DataFrame] = {}

    def __call__(self, table: str) -> DataFrame:
        if table not in self._frames:
            self._frames[table] = self._read(table).persist()
        return self._frames[table]

    def _read(self, table: str) -> DataFrame:
        if not self.lake.exists(table):
            raise DataQualityError(f"{table}: no table at {self.lake.uri(table)}; run the jobs that write it first")
        frame = self.lake.read(self.spark, table)
        if PARTITION not in frame.columns or table not in self.bounds.ranges:
            return frame
        lo, hi = self.bounds.ranges[table]
        where = f"{PARTITION} <= '{hi.isoformat()}'"
        if lo is not None:
            where = f"{PARTITION} >= '{lo.isoformat()}' AND {where}"
        return self.lake.read(self.spark, table, where=where)

    def close(self) -> None:
        for frame in self._frames.values():
            frame.unpersist()
        self._frames.clear()


def feature_frame(fs: FeatureSet, read: Any, run_date: dt.date) -> DataFrame:
    """The gold rows of one feature set for ``run_date`` (without ``dt``)."""
    t = set_time(fs, run_date)
    out = compute(fs, read, Scope(t))
    return out.withColumn(fs.as_of_column, ts_literal(t)) if fs.as_of_column else out


def _dimension_points(fs: FeatureSet, name: str, read: Any, times: list[int]) -> DataFrame:
    """``(*entity, _us)``: the keys a spine dimension has as of each time (as :func:`dimension.as_of` picks)."""
    from pyspark.sql import functions as F

    dim = fs.dimensions[name]
    rows = read(dim.table)
    if dim.filter:
        rows = rows.where(F.expr(dim.filter))
    keys = [F.col(k).alias(e) for e, k in zip(fs.entity, dim.key, strict=True)]
    every = F.array(*[F.lit(t) for t in times])
    if dim.time is None or dim.fallback == "earliest":
        return rows.select(*keys).distinct().select(*fs.entity, F.explode(every).alias("_us"))
    first = rows.groupBy(*keys).agg(F.min(F.unix_micros(F.col(dim.time))).alias("_first"))
    seen = (lambda t: F.col("_first") <= t) if dim.include_t else (lambda t: F.col("_first") < t)
    return first.select(*fs.entity, F.explode(F.filter(every, seen)).alias("_us"))


def range_frame(fs: FeatureSet, read: Any, dates: Sequence[dt.date]) -> DataFrame:
    """The gold rows of ``fs`` for every date of ``dates`` at once, with ``dt``: the same rows as
    :func:`feature_frame` per date, computed point in time on ``(entity, t)`` spine rows (an entity has a row
    for a date when it has a source row in that date's window, or is a key of a spine dimension as of it).  A
    numba decay kernel runs as of one literal time: here the same sum is computed in SQL (``decay.in_sql``)."""
    from pyspark.sql import functions as F

    fs = decay.in_sql(fs)

    times = {micros(set_time(fs, d)): d.isoformat() for d in dates}
    window_us = int(fs.max_window.total_seconds() * 1_000_000)
    rows = read(fs.source)
    if fs.filter:
        rows = rows.where(F.expr(fs.filter))
    at = F.unix_micros(F.col(fs.time))
    seen = (lambda t: at <= t) if fs.include_t else (lambda t: at < t)
    candidates = F.filter(F.array(*[F.lit(t) for t in sorted(times)]), lambda t: (at >= t - window_us) & seen(t))
    spines = [rows.select(*fs.entity, F.explode(candidates).alias("_us"))] if "source" in fs.spine else []
    spines += [_dimension_points(fs, name, read, sorted(times)) for name in fs.spine if name != "source"]
    union = functools.reduce(lambda a, b: a.unionByName(b), spines)
    points = union.distinct().select(*fs.entity, F.timestamp_micros("_us").alias(T))
    out = compute(fs, read, Scope(None), base=points)
    day = F.create_map(*[x for t, d in times.items() for x in (F.lit(t), F.lit(d))])[F.unix_micros(F.col(T))]
    if fs.as_of_column:
        out = out.withColumn(fs.as_of_column, F.col(T))
    return out.withColumn(PARTITION, day).select(*fs.entity, *[c for f in fs.features for c in output_names(f)],
                                                 *([fs.as_of_column] if fs.as_of_column else []), PARTITION)


def _input_rows(fs: FeatureSet | None, ts: TrainingSpec | None, read: Any, run_date: dt.date) -> int:
    """Source rows behind an output (for the 0-row check)."""
    from pyspark.sql import functions as F

    if fs is not None:
        t = set_time(fs, run_date)
        return read(fs.source).where(Scope(t).window_filter(fs.time, fs.max_window, fs.include_t)).count()
    if ts.label.select == "partition":
        return read(ts.label.source).where(F.col(PARTITION) == F.lit(run_date.isoformat())).count()
    t = labels.label_time(ts.label, run_date) or day_start(run_date)
    end = t + (ts.label.window or _DAY)
    time = F.col(ts.label.time)
    return read(ts.label.source).where((time >= ts_literal(t)) & (time < ts_literal(end))).count()


def _write(lake: Lake, name: str, table: str, df: DataFrame, run_date: dt.date, allow_empty: bool,
           input_rows: Any) -> Any:
    from pyspark.sql import functions as F

    day = run_date.isoformat()
    before = lake.version(table) if lake.exists(table) else None
    result = lake.write(df.withColumn(PARTITION, F.lit(day)), table, mode="overwrite", partition_by=[PARTITION],
                        replace_where=f"{PARTITION} = '{day}'")
    log.info("%s -> %s dt=%s: %d rows", name, table, day, result.rows)
    if result.rows == 0 and not allow_empty:
        n = input_rows()
        if n:
            if before is not None:
                lake.restore(table, before)
            raise DataQualityError(f"{name}: 0 rows for dt={day} from {n} input rows; the table is left as it "
                                   f"was (mark the set allow_empty: true if that can be right)")
    return result


def _write_range(lake: Lake, output: _Output, df: DataFrame, days: list[dt.date],
                 input_rows: Any) -> dict[str, WriteResult]:
    """One partition replace of ``days`` with ``df`` (which has ``dt``); per date its rows, the 0-row check as in
    :func:`_write`."""
    from pyspark.sql import functions as F

    from lakeloop.delta.write import WriteResult

    names = [d.isoformat() for d in days]
    before = lake.version(output.table) if lake.exists(output.table) else None
    where = f"{PARTITION} IN (" + ", ".join(f"'{d}'" for d in names) + ")"
    result = lake.write(df, output.table, mode="overwrite", partition_by=[PARTITION], replace_where=where)
    counts = {r[PARTITION]: r["n"] for r in lake.read(df.sparkSession, output.table, where=where)
              .groupBy(PARTITION).agg(F.count(F.lit(1)).alias("n")).collect()}
    log.info("%s -> %s dt=%s..%s: %d rows in one commit", output.name, output.table, names[0], names[-1], result.rows)
    empty = [d for d in days if not counts.get(d.isoformat())] if not output.allow_empty else []
    for day in empty:
        n = input_rows(day)
        if n:
            if before is not None:
                lake.restore(output.table, before)
            raise DataQualityError(f"{output.name}: 0 rows for dt={day.isoformat()} from {n} input rows; the table "
                                   f"is left as it was (mark the set allow_empty: true if that can be right)")
    return {d: WriteResult(version=result.version, files=result.files, rows=counts.get(d, 0)) for d in names}


def _selected(specs: Specs, names: list[str] | None) -> tuple[list[FeatureSet], list[TrainingSpec]]:
    from lakeloop.conf import ConfError

    if names is None:
        return [s for s in specs.sets.values() if s.materialize], [t for t in specs.training.values()
                                                                  if t.materialize]
    known = {**specs.sets, **specs.training}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfError(f"features.sets: unknown set {unknown[0]!r} (declared: {', '.join(sorted(known))})")
    return [specs.sets[n] for n in names if n in specs.sets], [specs.training[n] for n in names
                                                               if n in specs.training]


def build_all(spark: SparkSession, conf: Conf, run_date: dt.date, specs: Specs | None = None,
              names: list[str] | None = None, *, force: bool = False) -> dict[str, Any]:
    """Compute and write every selected output of ``run_date``; returns ``{gold table: WriteResult}``."""
    return build_range(spark, conf, [run_date], specs, names, force=force)[run_date.isoformat()]


@dataclass
class _Output:
    name: str
    table: str
    spec: FeatureSet | TrainingSpec
    allow_empty: bool
    joined: tuple[FeatureSet, ...] = ()

    def bounds(self, all_sets: dict[str, FeatureSet], run_date: dt.date) -> Bounds:
        if isinstance(self.spec, FeatureSet):
            return plan_bounds([self.spec], [], all_sets, run_date)
        return plan_bounds([], [self.spec], all_sets, run_date)

    def frame(self, all_sets: dict[str, FeatureSet], read: Inputs, run_date: dt.date) -> DataFrame:
        if isinstance(self.spec, FeatureSet):
            return feature_frame(self.spec, read, run_date)
        return training_frame(self.spec, all_sets, read, run_date)

    def input_rows(self, read: Inputs, run_date: dt.date) -> int:
        if isinstance(self.spec, FeatureSet):
            return _input_rows(self.spec, None, read, run_date)
        return _input_rows(None, self.spec, read, run_date)


def _outputs(specs: Specs, sets: list[FeatureSet], trainings: list[TrainingSpec]) -> list[_Output]:
    out = [_Output(fs.name, fs.table, fs, fs.allow_empty) for fs in sets]
    return out + [_Output(ts.name, ts.table, ts, ts.allow_empty, tuple(specs.sets[j.set] for j in ts.joins))
                  for ts in trainings]


class _Fingerprints:
    """Partition fingerprints of tables from their Delta logs (no data read), each log read once."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._seen: dict[str, tuple[int | None, dict[str, str]]] = {}

    def table(self, table: str, fresh: bool = False) -> tuple[int | None, dict[str, str]]:
        if fresh or table not in self._seen:
            self._seen[table] = self.lake.partition_state(table, PARTITION)
        return self._seen[table]

    def inputs(self, bounds: Bounds) -> list[Any]:
        return [[table, self.lake.partitions_between(self.table(table), lo and lo.isoformat(), hi.isoformat())]
                for table, (lo, hi) in sorted(bounds.ranges.items())]


def _input_key(output: _Output, all_sets: dict[str, FeatureSet], prints: _Fingerprints, run_date: dt.date) -> str:
    payload = json.dumps([run_date.isoformat(), repr(output.spec), [repr(j) for j in output.joined],
                          prints.inputs(output.bounds(all_sets, run_date))], default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _markers(lake: Lake) -> Documents:
    from lakeloop.reports import Documents

    return Documents.reports(lake, "features")


def _marker(table: str, day: str) -> str:
    return f"{table}/dt={day}.json"


def _done_before(lake: Lake, prints: _Fingerprints, output: _Output, day: str, key: str) -> WriteResult | None:
    """The earlier write of ``day`` when it came from the same input and its partition is still that write's."""
    from lakeloop.delta.write import WriteResult

    stored = _markers(lake).read_json(_marker(output.table, day))
    if not isinstance(stored, dict) or stored.get("input_key") != key:
        return None
    if prints.table(output.table)[1].get(day) != stored.get("partition"):
        return None
    return WriteResult(version=stored.get("version"), files=stored.get("files", 0), rows=stored.get("rows", 0),
                       skipped=True)


def build_range(spark: SparkSession, conf: Conf, dates: Sequence[dt.date], specs: Specs | None = None,
                names: list[str] | None = None, *, force: bool = False) -> dict[str, dict[str, Any]]:
    """Every selected output of each date of ``dates``: ``{date: {gold table: WriteResult}}``.

    Inputs are read once for all the dates still to build (``force``: all of them); a date an earlier run
    built from the same inputs is skipped (``WriteResult.skipped``) before any data is read.
    """
    from lakeloop.lake import Lake

    specs = specs or load_specs(conf)
    sets, trainings = _selected(specs, names if names is not None else conf.get("features.sets"))
    lake, all_sets = Lake.from_conf(conf), dict(specs.sets)
    outputs, prints = _outputs(specs, sets, trainings), _Fingerprints(lake)
    results: dict[str, dict[str, Any]] = {d.isoformat(): {} for d in dates}
    todo: list[tuple[_Output, dt.date, str]] = []
    for day in dates:
        for output in outputs:
            key = _input_key(output, all_sets, prints, day)
            done = None if force else _done_before(lake, prints, output, day.isoformat(), key)
            if done is not None:
                log.info("%s dt=%s: built from the same input before; skipped", output.table, day.isoformat())
                results[day.isoformat()][output.table] = done
            else:
                todo.append((output, day, key))
    if todo:
        _build(spark, lake, all_sets, todo, results, prints)
    return results


def _build(spark: SparkSession, lake: Lake, all_sets: dict[str, FeatureSet], todo: list[tuple[_Output, dt.date, str]],
           results: dict[str, dict[str, Any]], prints: _Fingerprints) -> None:
    bounds = Bounds()
    for output, day, _ in todo:
        bounds.merge(output.bounds(all_sets, day))
    inputs = Inputs(spark, lake, bounds)
    together: dict[str, list[dt.date]] = {}
    for output, day, _ in todo:
        together.setdefault(output.table, []).append(day)
    try:
        for output in {o.table: o for o, _, _ in todo}.values():
            days = together.get(output.table, [])
            # label rows are built per date: a training set goes a month of dates per pass (the plan of a union of
            # every date's label rows grows with the dates: 183 dates took 130 s in one pass, 72 s in six)
            step = len(days) if isinstance(output.spec, FeatureSet) else TRAINING_DATES_PER_PASS
            for i in range(0, len(days) if len(days) > 1 else 0, step):
                chunk = days[i:i + step]
                frame = (range_frame(output.spec, inputs, chunk) if isinstance(output.spec, FeatureSet)
                         else training.training_range_frame(output.spec, all_sets, inputs, chunk, PARTITION))
                written = _write_range(lake, output, frame, chunk, lambda day, o=output: o.input_rows(inputs, day))
                for d, result in written.items():
                    results[d][output.table] = result
        for output, day, _ in todo:
            if len(together.get(output.table, [])) <= 1:
                results[day.isoformat()][output.table] = _write(
                    lake, output.name, output.table, output.frame(all_sets, inputs, day), day, output.allow_empty,
                    lambda output=output, day=day: output.input_rows(inputs, day))
    finally:
        inputs.close()
    # markers from the logs after the writes: an output that is another output's input is keyed by what it is now
    for table in {output.table for output, _, _ in todo}:
        prints.table(table, fresh=True)
    markers = _markers(lake)
    for output, day, _ in todo:
        written, d = results[day.isoformat()][output.table], day.isoformat()
        markers.write_json(_marker(output.table, d), {
            "input_key": _input_key(output, all_sets, prints, day), "partition": prints.table(output.table)[1].get(d),
            "version": written.version, "files": written.files, "rows": written.rows})
