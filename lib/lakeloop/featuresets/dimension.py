"""Dimension tables read *as of t*, and ``kind: dimension`` features.

A dimension (``dimensions:`` of a set, or a training set's negative pool) gives per key its latest
row with ``time < t`` (``include_t: true``: ``time <= t``).  ``fallback: earliest`` gives a key
whose rows are all later its earliest row instead (a look-ahead, for attributes that never
change; off by default).  ``kind: dimension`` takes one ``column`` (or ``expr``) of it, joined on
the set's entity, with an optional ``default`` for entities the dimension lacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakeloop.featuresets.scope import Scope
    from lakeloop.featuresets.spec import DimensionSpec, Node

__all__ = ["FALLBACKS", "parse_dimension", "parse", "as_of"]

FALLBACKS = ("none", "earliest")
_KEYS = ("table", "key", "time", "include_t", "fallback", "filter")


def parse_dimension(name: str, node: Node) -> DimensionSpec:
    from lakeloop.featuresets.spec import DimensionSpec

    spec = DimensionSpec(name=name, table=node.table("table"), key=node.names("key", required=True),
                         time=node.ident("time"), include_t=node.flag("include_t", False),
                         fallback=node.text("fallback", "none", choices=FALLBACKS), filter=node.text("filter"),
                         origin=f"{node.file}: {node.key()}")
    node.done(_KEYS)
    return spec


def parse(node: Node) -> dict[str, Any]:
    column, expr = node.ident("column"), node.text("expr")
    if (column is None) == (expr is None):
        raise node.error("give exactly one of column or expr", "column")
    return {"dimension": node.text("dimension", required=True), "expr": expr or column}


def as_of(table: DataFrame, dim: DimensionSpec, scope: Scope, columns: dict[str, str],
          wanted: DataFrame | None = None) -> DataFrame:
    """``(*dim.key, [_t,] *columns)``: each key's row as of ``t``; ``columns``: output name -> SQL expr.

    In point-in-time mode ``wanted`` holds the ``(*key, _t)`` pairs to look up.
    """
    from pyspark.sql import functions as F

    rows = table.where(F.expr(dim.filter)) if dim.filter else table
    if wanted is not None:
        rows = rows.join(wanted, list(dim.key))
    attrs = F.struct(*[F.expr(e).alias(n) for n, e in columns.items()])
    if dim.time is None:
        pick = F.first(attrs)
    else:
        time = F.col(dim.time)
        before = time <= scope.t if dim.include_t else time < scope.t
        pick = F.max_by(attrs, F.when(before, time))
        if dim.fallback == "earliest":
            pick = F.coalesce(pick, F.min_by(attrs, time))
    keys = [*dim.key, *scope.keys]
    out = rows.groupBy(*keys).agg(pick.alias("_pick")).where(F.col("_pick").isNotNull())
    return out.select(*keys, *[F.col("_pick")[n].alias(n) for n in columns])
