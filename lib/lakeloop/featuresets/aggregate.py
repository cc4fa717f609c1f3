"""``kind: aggregate``: one aggregation over the source rows in ``[t - window, t)``.

``agg`` is one of :data:`AGGS`; ``expr`` (Spark SQL over a source row) is what is aggregated
(``count`` without it counts rows); ``where`` keeps only matching rows; ``group_by`` (an
expression) makes the feature a map from each group's value to the aggregate, sorted by key.
``count`` and ``count_distinct`` are 0 for an entity without rows, the others null (``default``
overrides).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column

    from lakeloop.featuresets.scope import Scope
    from lakeloop.featuresets.spec import Feature, FeatureSet, Node

__all__ = ["AGGS", "parse", "column", "default_for"]

AGGS = ("count", "sum", "mean", "min", "max", "stddev", "count_distinct", "first", "last", "seconds_since_last")
_NO_EXPR = ("seconds_since_last",)
_ZERO = ("count", "count_distinct")


def parse(node: Node) -> dict[str, Any]:
    agg = node.text("agg", required=True, choices=AGGS)
    expr = node.text("expr")
    if expr is None and agg not in ("count", *_NO_EXPR):
        raise node.error(f"agg {agg} needs an expr to aggregate", "expr")
    if expr is not None and agg in _NO_EXPR:
        raise node.error(f"agg {agg} takes no expr (it uses the set's time column)", "expr")
    return {"agg": agg, "expr": expr, "group_by": node.text("group_by")}


def default_for(feature: Feature) -> Any:
    if feature.default is not None:
        return feature.default
    return 0 if feature.opts["agg"] in _ZERO and not feature.opts["group_by"] else None


def column(fs: FeatureSet, feature: Feature, scope: Scope) -> Column:
    """The aggregate expression, for ``groupBy(entity)`` (or ``(entity, group)`` with ``group_by``)."""
    from pyspark.sql import functions as F

    agg, expr = feature.opts["agg"], feature.opts["expr"]
    cond = scope.condition(fs, feature)

    def value(col: Column) -> Column:
        return col if cond is None else F.when(cond, col)

    if agg == "count":
        if expr is None:
            return F.count(F.lit(1)) if cond is None else F.count_if(cond)
        return F.count(value(F.expr(expr)))
    if agg == "seconds_since_last":
        last = F.max(value(F.col(fs.time)))
        return ((F.unix_micros(scope.t) - F.unix_micros(last)) / 1_000_000).cast("double")
    x = value(F.expr(expr))
    if agg in ("first", "last"):
        order = value(F.col(fs.time))
        return F.min_by(x, order) if agg == "first" else F.max_by(x, order)
    return {"sum": F.sum, "mean": F.avg, "min": F.min, "max": F.max, "stddev": F.stddev_samp,
            "count_distinct": F.countDistinct}[agg](x)
