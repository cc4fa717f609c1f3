"""``kind: sessions``: the entity's rows in ``[t - window, t)`` split into sessions by an inactivity gap.

The rows of an entity in time order form one session until the gap between two consecutive rows is
longer than ``gap`` (a gap of exactly ``gap`` stays in the session).  ``stat`` is what the feature
gives of them (:data:`STATS`): the number of sessions (``count``, 0 for an entity without rows), the
mean events per session, the mean or the longest session duration in seconds (last minus first time;
null without rows).  ``where`` keeps only matching rows, ``window`` narrows the set's window.

This is sequential per-entity state, which SQL reaches only with a window over the rows in time order,
so ``impl: auto`` (the default) runs the numba kernel of :mod:`lakeloop.kernels` in ``mapInArrow``;
``impl: sql`` runs the SQL-window formulation (``lag`` and a running sum), which gives the same values.
Features of one set with the same ``gap``, ``where``, ``window`` and ``impl`` share one computation.
A null entity column in the rows stops the computation with an error naming the feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakeloop.featuresets.scope import Scope
    from lakeloop.featuresets.spec import Feature, FeatureSet, Node

__all__ = ["IMPLS", "STATS", "parse", "default_for", "frame", "share_key"]

IMPLS = ("numba", "sql", "auto")
#: ``impl: auto``: numba, measured faster than the SQL window (docs/features.md, bench/features.py)
AUTO = "numba"
STATS = ("count", "mean_events", "mean_duration", "max_duration")


def parse(node: Node) -> dict[str, Any]:
    impl = node.text("impl", "auto", choices=IMPLS)
    return {"gap": node.duration("gap", required=True), "stat": node.text("stat", "count", choices=STATS),
            "impl": AUTO if impl == "auto" else impl}


def default_for(feature: Feature) -> Any:
    if feature.default is not None:
        return feature.default
    return 0 if feature.opts["stat"] == "count" else None


def share_key(feature: Feature) -> tuple:
    """Features with equal keys are computed by one kernel run."""
    return feature.opts["gap"], feature.where, feature.window, feature.opts["impl"]


def _stat(stat: str) -> Column:
    from pyspark.sql import functions as F

    sessions = F.col("sessions")
    if stat == "count":
        return sessions
    if stat == "mean_events":
        return F.col("events") / sessions
    if stat == "mean_duration":
        return F.col("duration_us") / sessions / 1_000_000
    return (F.col("longest_us") / 1_000_000).cast("double")


def _checked_rows(rows: DataFrame, fs: FeatureSet, feature: Feature, scope: Scope, keys: list[str]) -> DataFrame:
    """``(*keys, ts)`` of the rows the feature sees; a null entity raises an error naming the feature."""
    from pyspark.sql import functions as F

    cond = scope.condition(fs, feature)
    picked = rows if cond is None else rows.where(cond)
    null_key = F.lit(False)
    for k in fs.entity:
        null_key = null_key | F.col(k).isNull()
    message = (f"{feature.origin}: a row has a null {'/'.join(fs.entity)}; sessions need the entity of every row "
               f"(drop such rows with the set's filter)")
    ts = F.when(null_key, F.raise_error(F.lit(message)).cast("timestamp")).otherwise(F.col(fs.time))
    return picked.select(*keys, ts.alias("ts"))


def frame(rows: DataFrame, fs: FeatureSet, features: list[Feature], scope: Scope, keys: list[str]) -> DataFrame:
    """``(*keys, *feature names)`` for features sharing one :func:`share_key`."""

    from lakeloop import kernels

    first = features[0]
    picked = _checked_rows(rows, fs, first, scope, keys)
    gap_us = int(first.opts["gap"].total_seconds() * 1_000_000)
    if first.opts["impl"] == "numba":
        stats = kernels.sessions_numba(kernels.prepare_keyed(picked, keys, ["ts"]), keys, gap_us)
    else:
        stats = kernels.sessions_sql(picked, keys, gap_us)
    return stats.select(*keys, *[_stat(f.opts["stat"]).alias(f.name) for f in features])
