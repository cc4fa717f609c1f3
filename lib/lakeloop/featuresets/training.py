"""Training sets: label rows joined point in time to feature sets (``conf/training_sets/<name>.yaml``).

Every feature of a label row is computed as of that row's label time, from source rows strictly
before it, never later.  Two strategies (``as_of_join``), both plain Spark joins and aggregations:

* ``per_time`` (default): for each distinct label time ``t`` (one for an outcome label; at most
  ``max_label_times`` for row labels) every joined set is computed as of the literal ``t`` exactly
  as its gold table is, then left-joined to the label rows of that ``t`` on the set's entity.
  Cheapest when label times are few: one aggregation per set and ``t``.
* ``range``: each label row's time goes into ``_t``; source rows are joined to the distinct
  ``(entity, _t)`` on the entity and kept when ``_t - window <= time < _t``, then aggregated per
  ``(entity, _t)`` (a range join).  For labels with many times (one per row).

Joins run in the declared order; a later set's entity may use a column an earlier join added
(a dimension attribute of one key, then a set keyed by that attribute).

:func:`feature_rows` applies the same joins to given entity rows at one time ``t`` (no labels, no
negatives): the features bulk inference scores, computed by the code that built the training rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

from lakeloop.conf import ConfError
from lakeloop.featuresets import decay, labels
from lakeloop.featuresets.compute import Reader, compute
from lakeloop.featuresets.scope import Scope, T
from lakeloop.featuresets.sets import output_names
from lakeloop.featuresets.spec import FeatureSet, JoinSpec, Node, TrainingSpec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["STRATEGIES", "parse_training_set", "training_frame", "training_range_frame", "feature_rows"]

STRATEGIES = ("per_time", "range")
_KEYS = ("description", "table", "label", "negatives", "features", "fill", "columns", "as_of_join",
         "max_label_times", "label_time_column", "materialize", "allow_empty")


def _join(node: Node, sets: Mapping[str, FeatureSet]) -> JoinSpec:
    name = node.text("set", required=True, choices=tuple(sorted(sets)) or ("<no feature sets declared>",))
    fs = sets[name]
    raw = node.raw("columns")
    if raw is None:
        pairs = [(f.name, f.name) for f in fs.features]
    elif isinstance(raw, list) and all(isinstance(c, str) for c in raw):
        pairs = [(c, c) for c in raw]
    elif isinstance(raw, dict) and all(isinstance(v, str) for v in raw.values()):
        pairs = list(raw.items())
    else:
        raise node.error(f"expected a list of feature names or a mapping output -> feature, got {raw!r}", "columns")
    known = [f.name for f in fs.features]
    for out, src in pairs:
        if src not in known:
            raise node.error(f"{name} has no feature {src!r} (features: {', '.join(known)})", f"columns.{out}")
    node.done(("set", "columns"))
    return JoinSpec(set=name, columns=tuple(pairs), origin=f"{node.file}: {node.key()}")


def _check(node: Node, spec: TrainingSpec, sets: Mapping[str, FeatureSet]) -> None:
    available = [*spec.label.entity, spec.label.column, spec.label_time_column]
    for i, join in enumerate(spec.joins):
        fs = sets[join.set]
        missing = [c for c in fs.entity if c not in available]
        if missing:
            raise node.error(f"{join.set} is keyed by {list(fs.entity)} but the rows have no {missing[0]} here "
                             f"(columns so far: {', '.join(available)})", f"features[{i}].set")
        for out, src in join.columns:
            for column in output_names(fs.feature(src), out):
                if column in available:
                    raise node.error(f"column {column!r} already exists; rename it (output: feature)",
                                     f"features[{i}].columns")
                available.append(column)
        numba = [f.name for f in fs.features if f.kind == "decay" and f.opts["impl"] == "numba"]
        if numba and spec.as_of_join == "range":
            raise node.error(f"{join.set}.{numba[0]} uses impl numba, which needs as_of_join: per_time "
                             f"(one t per computation)", "as_of_join")
    for c in spec.columns or ():
        if c not in available:
            raise node.error(f"unknown column {c!r} (available: {', '.join(available)})", "columns")
    for c in spec.fill:
        if c not in available:
            raise node.error(f"unknown column {c!r} (available: {', '.join(available)})", "fill")


def parse_training_set(name: str, node: Node, sets: Mapping[str, FeatureSet]) -> TrainingSpec:
    label = labels.parse_label(node.child("label"))
    negatives = labels.parse_negatives(node.child("negatives"), label) if node.has("negatives") else None
    raw_joins = node.raw("features")
    if not isinstance(raw_joins, list) or not raw_joins:
        raise node.error("expected a non-empty list of {set, columns}", "features")
    fill = node.raw("fill", {})
    if not isinstance(fill, dict):
        raise node.error(f"expected a mapping column -> value, got {fill!r}", "fill")
    columns = node.names("columns") or None
    spec = TrainingSpec(
        name=name, file=node.file, table=node.table("table", required=False) or f"gold.{name}", label=label,
        negatives=negatives, joins=tuple(_join(Node(j, node.file, f"features[{i}]"), sets)
                                         for i, j in enumerate(raw_joins)),
        fill=fill, columns=columns, as_of_join=node.text("as_of_join", "per_time", choices=STRATEGIES),
        max_label_times=node.integer("max_label_times", 64, minimum=1),
        label_time_column=node.ident("label_time_column", "label_ts"),
        materialize=node.flag("materialize", True), allow_empty=node.flag("allow_empty", False))
    node.raw("description")
    node.done(_KEYS)
    _check(node, spec, sets)
    return spec


def _label_times(spec: TrainingSpec, rows: DataFrame, run_date: dt.date) -> list[dt.datetime]:
    fixed = labels.label_time(spec.label, run_date)
    if fixed is not None:
        return [fixed]
    found = [r[0] for r in rows.select(spec.label_time_column).distinct().limit(spec.max_label_times + 1).collect()]
    if len(found) > spec.max_label_times:
        raise ConfError(f"{spec.file}: as_of_join: more than max_label_times ({spec.max_label_times}) distinct "
                        f"label times; use as_of_join: range")
    return [t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in found if t is not None]


def _per_time(spec: TrainingSpec, sets: Mapping[str, FeatureSet], read: Reader, rows: DataFrame,
              times: list[dt.datetime]) -> DataFrame:
    from pyspark.sql import functions as F

    from lakeloop.featuresets.scope import ts_literal

    parts = []
    for t in times:
        part = rows if len(times) == 1 else rows.where(F.col(spec.label_time_column) == ts_literal(t))
        for join in spec.joins:
            part = compute(sets[join.set], read, Scope(t), base=part, select=dict(join.columns))
        parts.append(part)
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def _range(spec: TrainingSpec, sets: Mapping[str, FeatureSet], read: Reader, rows: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    part = rows.withColumn(T, F.col(spec.label_time_column))
    for join in spec.joins:
        part = compute(sets[join.set], read, Scope(None), base=part, select=dict(join.columns))
    return part.drop(T)


def training_frame(spec: TrainingSpec, sets: Mapping[str, FeatureSet], read: Reader,
                   run_date: dt.date) -> DataFrame:
    """The training rows of ``run_date``: labels, then every joined set's features as of each label time."""
    rows = labels.label_rows(spec.label, spec.negatives, read, run_date, spec.label_time_column)
    if spec.as_of_join == "range":
        out = _range(spec, sets, read, rows)
    else:
        times = _label_times(spec, rows, run_date)
        if not times:
            out = _range(spec, sets, read, rows)  # no label rows: the empty frame with every column
        else:
            out = _per_time(spec, sets, read, rows, times)
    out = _filled(spec, out)
    return out.select(*spec.columns) if spec.columns else out


def training_range_frame(spec: TrainingSpec, sets: Mapping[str, FeatureSet], read: Reader,
                         dates: list[dt.date], partition: str = "dt") -> DataFrame:
    """The training rows of every date of ``dates``, with ``partition``: each date's label rows as a run of that
    date makes them, then every joined set's features as of each row's label time in one point-in-time pass
    (the ``range`` join), so the rows equal :func:`training_frame`'s per date.  A numba decay kernel runs as of
    one literal time: here the same decayed sum is computed in SQL (:func:`lakeloop.featuresets.decay.in_sql`)."""
    from pyspark.sql import functions as F

    day = "_run_date"
    parts = [labels.label_rows(spec.label, spec.negatives, read, d, spec.label_time_column)
             .withColumn(day, F.lit(d.isoformat())) for d in dates]
    rows = parts[0]
    for part in parts[1:]:
        rows = rows.unionByName(part)
    out = _filled(spec, _range(spec, {n: decay.in_sql(fs) for n, fs in sets.items()}, read, rows))
    out = out.select(*spec.columns, day) if spec.columns else out.drop(partition)
    return out.withColumnRenamed(day, partition)


def _filled(spec: TrainingSpec, frame: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    for column, value in spec.fill.items():
        frame = frame.withColumn(column, F.coalesce(F.col(column), F.lit(value)))
    return frame


def feature_rows(spec: TrainingSpec, sets: Mapping[str, FeatureSet], read: Reader, rows: DataFrame,
                 t: dt.datetime) -> DataFrame:
    """``rows`` (entity columns) with every joined set's features as of ``t``, filled as the training rows are.

    The training set's joins without its labels: each row's time is ``t``, so a feature sees only source
    rows before ``t``.  The columns are those of ``rows`` then the joined ones (``columns`` is not applied:
    it names the label columns the rows lack).
    """
    available = {*rows.columns, *(out for j in spec.joins for out, _ in j.columns)}
    missing = [c for j in spec.joins for c in sets[j.set].entity if c not in available]
    if missing:
        raise ConfError(f"{spec.file}: the rows to score lack the entity column {missing[0]!r} of the training "
                        f"set's features (rows have: {', '.join(rows.columns)})")
    return _filled(spec, _per_time(spec, sets, read, rows, [t]))
