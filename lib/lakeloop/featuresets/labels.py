"""Label rows of a training set, and seeded negative sampling.

``kind: row`` -- supervised data: every source row whose ``time`` falls on the run date is a label
row (``select: partition``: every row of the run date's ``dt`` partition, for a feed landed in batches);
``expr`` (a column or SQL expression of the row itself) is the label and the row's ``time`` its label
time.

``kind: outcome`` -- an outcome observed after the label time ``t`` (``at``: the start or the end
of the run date): the entities with a source row in ``[t, t + window)`` matching ``event_types``
(values of ``type_column``) and ``where``; the label is ``agg`` (max, sum, count) of ``expr``.

``negatives`` (outcome labels only): per positive, ``per_positive`` draws from the keys of a
``pool`` dimension as of ``t``, chosen by ``xxhash64(seed, other entity columns, positive's
sampled key, draw number)``; draws that hit an entity with any source row in the label window are
dropped and duplicates collapse, so a re-run draws the same rows.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from lakeloop.featuresets import dimension
from lakeloop.featuresets.scope import Scope, day_start, ts_literal
from lakeloop.featuresets.spec import AS_OF, LabelSpec, NegativeSpec, Node

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakeloop.featuresets.compute import Reader

__all__ = ["KINDS", "AGGS", "SELECT", "PARTITION", "parse_label", "parse_negatives", "label_time", "label_rows"]

KINDS = ("row", "outcome")
#: which source rows are a run date's row labels: their time on the run date, or the run date's partition
SELECT = ("time", "partition")
#: the partition column of lake tables
PARTITION = "dt"
AGGS = ("max", "sum", "count")
_TYPES = ("int", "long", "double", "float", "boolean", "string")
_COMMON_KEYS = ("kind", "source", "entity", "time", "filter", "column", "type", "expr")
_ROW_KEYS = (*_COMMON_KEYS, "select")
_OUTCOME_KEYS = (*_COMMON_KEYS, "at", "window", "event_types", "type_column", "where", "agg")


def _where(node: Node) -> str | None:
    types = node.raw("event_types")
    column = node.ident("type_column")
    parts = [node.text("where")]
    if types is not None:
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise node.error(f"expected a non-empty list of strings, got {types!r}", "event_types")
        if column is None:
            raise node.error("event_types needs type_column (the column holding the event type)", "type_column")
        quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in types)
        parts.append(f"`{column}` IN ({quoted})")
    parts = [p for p in parts if p]
    return " AND ".join(f"({p})" for p in parts) if parts else None


def parse_label(node: Node) -> LabelSpec:
    kind = node.text("kind", required=True, choices=KINDS)
    common: dict[str, Any] = dict(
        kind=kind, source=node.table("source"), entity=node.names("entity", required=True),
        time=node.ident("time", required=True), filter=node.text("filter"), column=node.ident("column", "label"),
        type=node.text("type", choices=_TYPES), origin=f"{node.file}: {node.key()}")
    if kind == "row":
        spec = LabelSpec(**common, expr=node.text("expr", required=True),
                         select=node.text("select", "time", choices=SELECT))
        node.done(_ROW_KEYS)
        return spec
    spec = LabelSpec(**common, expr=node.text("expr", "1"), where=_where(node),
                     at=node.text("at", "start_of_day", choices=AS_OF),
                     window=node.duration("window", required=True), agg=node.text("agg", "max", choices=AGGS))
    node.done(_OUTCOME_KEYS)
    return spec


def parse_negatives(node: Node, label: LabelSpec) -> NegativeSpec:
    if label.kind != "outcome":
        raise node.error("negative sampling needs an outcome label (kind: outcome)")
    sample = node.ident("sample", required=True)
    if sample not in label.entity or len(label.entity) < 2:
        raise node.error(f"expected one of the label's entity columns {list(label.entity)} (and at least one "
                         f"other to sample for), got {sample!r}", "sample")
    pool = dimension.parse_dimension("pool", node.child("pool"))
    if len(pool.key) != 1:
        raise node.error(f"the pool's key must be one column (the values of {sample}), got {list(pool.key)}",
                         "pool.key")
    seed = node.integer("seed")
    if seed is None:
        raise node.error("a value is required: an integer seed", "seed")
    spec = NegativeSpec(per_positive=node.integer("per_positive", 1, minimum=0), seed=seed, sample=sample,
                        pool=pool, value=node.scalar("value") if node.has("value") else 0,
                        origin=f"{node.file}: {node.key()}")
    node.done(("per_positive", "seed", "sample", "pool", "value"))
    return spec


def label_time(label: LabelSpec, run_date: dt.date) -> dt.datetime | None:
    """The one label time of an outcome label (None for row labels: each row has its own)."""
    if label.kind != "outcome":
        return None
    return day_start(run_date) + (dt.timedelta(days=1) if label.at == "end_of_day" else dt.timedelta(0))


def _cast(df: DataFrame, label: LabelSpec) -> DataFrame:
    from pyspark.sql import functions as F

    return df.withColumn(label.column, F.col(label.column).cast(label.type)) if label.type else df


def _row_labels(label: LabelSpec, read: Reader, run_date: dt.date, time_column: str) -> DataFrame:
    from pyspark.sql import functions as F

    rows = read(label.source)
    if label.filter:
        rows = rows.where(F.expr(label.filter))
    if label.select == "partition":
        rows = rows.where(F.col(PARTITION) == F.lit(run_date.isoformat()))
    else:
        start = day_start(run_date)
        end = start + dt.timedelta(days=1)
        rows = rows.where((F.col(label.time) >= ts_literal(start)) & (F.col(label.time) < ts_literal(end)))
    return _cast(rows.select(*label.entity, F.expr(label.expr).alias(label.column),
                             F.col(label.time).alias(time_column)), label)


def sample_negatives(positives: DataFrame, interacted: DataFrame, pool: DataFrame, label: LabelSpec,
                     neg: NegativeSpec) -> DataFrame:
    """Entity rows drawn for the positives (see the module docstring)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    others = [c for c in label.entity if c != neg.sample]
    keys = pool.select(F.col(neg.pool.key[0]).alias(neg.sample)).distinct()
    n_keys = keys.count()
    if neg.per_positive == 0 or n_keys == 0:
        return positives.limit(0).select(*label.entity)
    indexed = keys.withColumn("_draw", F.row_number().over(Window.orderBy(neg.sample)) - 1)
    draws = (positives.select(*others, F.col(neg.sample).alias("_pos"))
             .withColumn("_j", F.explode(F.sequence(F.lit(0), F.lit(neg.per_positive - 1))))
             .withColumn("_draw", F.pmod(F.xxhash64(F.lit(neg.seed), *others, "_pos", "_j"), F.lit(n_keys))))
    return (draws.join(F.broadcast(indexed), "_draw").select(*label.entity)
            .join(interacted.select(*label.entity), list(label.entity), "left_anti")
            .distinct())


def label_rows(label: LabelSpec, neg: NegativeSpec | None, read: Reader, run_date: dt.date,
               time_column: str) -> DataFrame:
    """``(*entity, label column, label time column)`` of ``run_date``."""
    from pyspark.sql import functions as F

    if label.kind == "row":
        return _row_labels(label, read, run_date, time_column)
    t = label_time(label, run_date)
    window = read(label.source)
    if label.filter:
        window = window.where(F.expr(label.filter))
    in_window = (F.col(label.time) >= ts_literal(t)) & (F.col(label.time) < ts_literal(t + label.window))
    window = window.where(in_window)
    matched = window.where(F.expr(label.where)) if label.where else window
    agg = {"max": F.max, "sum": F.sum, "count": F.count}[label.agg](F.expr(label.expr))
    positives = matched.groupBy(*label.entity).agg(agg.alias(label.column))
    rows = positives
    if neg is not None:
        pool = dimension.as_of(read(neg.pool.table), neg.pool, Scope(t), {"_one": "1"})
        negatives = sample_negatives(positives, window.select(*label.entity).distinct(), pool, label, neg)
        value = F.lit(neg.value).cast(positives.schema[label.column].dataType)
        rows = positives.unionByName(negatives.withColumn(label.column, value))
    return _cast(rows, label).withColumn(time_column, ts_literal(t))
