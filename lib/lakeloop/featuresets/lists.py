"""``kind: list``: the entity's rows in ``[t - window, t)`` as an array of structs, most recent first.

``fields`` are the struct's fields (column names, or ``{name: expr}`` mappings); ``order_by``
(default: the set's time column) sorts descending, ties broken by the later keys; ``max_length``
caps the list; ``where`` keeps only matching rows.  An entity without matching rows gets ``[]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column

    from lakeloop.featuresets.scope import Scope
    from lakeloop.featuresets.spec import Feature, FeatureSet, Node

__all__ = ["parse", "column"]


def _fields(node: Node) -> tuple[tuple[str, str], ...]:
    raw = node.raw("fields")
    if not isinstance(raw, list) or not raw:
        raise node.error(f"expected a non-empty list of column names or {{name: expr}} mappings, got {raw!r}",
                         "fields")
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append((item, item))
        elif isinstance(item, dict) and len(item) == 1 and all(isinstance(v, str) for v in item.values()):
            out.append(next(iter(item.items())))
        else:
            raise node.error(f"expected a column name or a {{name: expr}} mapping, got {item!r}", "fields")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise node.error(f"field names repeat: {names}", "fields")
    return tuple(out)


def parse(node: Node) -> dict[str, Any]:
    fields = _fields(node)
    order = node.raw("order_by")
    if order is not None and (not isinstance(order, list) or not order
                              or not all(isinstance(o, str) and o.strip() for o in order)):
        raise node.error(f"expected a non-empty list of expressions, got {order!r}", "order_by")
    max_length = node.integer("max_length", minimum=1)
    if max_length is None:
        raise node.error("a value is required: an integer >= 1", "max_length")
    return {"fields": fields, "order_by": tuple(order) if order else None, "max_length": max_length}


def column(fs: FeatureSet, feature: Feature, scope: Scope) -> Column:
    from pyspark.sql import functions as F

    fields, n = feature.opts["fields"], feature.opts["max_length"]
    order = feature.opts["order_by"] or (fs.time,)
    entry = F.struct(*[F.expr(o).alias(f"_o{i}") for i, o in enumerate(order)],
                     *[F.expr(e).alias(name) for name, e in fields])
    cond = scope.condition(fs, feature)
    collected = F.collect_list(entry if cond is None else F.when(cond, entry))
    ordered = F.slice(F.sort_array(collected, asc=False), 1, n)
    return F.transform(ordered, lambda x: F.struct(*[x[name].alias(name) for name, _ in fields]))
