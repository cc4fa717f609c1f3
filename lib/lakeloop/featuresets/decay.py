"""``kind: decay``: a time-decayed sum over the rows in ``[t - window, t)``.

    value = sum over rows of 2 ** (-(t - time) / half_life) = sum(exp(-ln 2 * age / half_life))

A row one half-life old weighs 0.5.  ``group_by`` makes it a map per group value (sorted by key),
``where`` keeps only matching rows; an entity without rows gets 0.0 (no ``group_by``).

``impl: auto`` (the default) is ``sql``, the faster of the two inside a feature set on the benchmark: that
sum in Spark SQL, computed in the set's aggregation with no Python and no extra shuffle.  ``impl: numba`` runs
the numba kernel of :mod:`lakeloop.kernels` in ``mapInArrow`` instead; it needs the grouping columns (the
entity, then ``group_by``) to be exactly one integer column and one string column, and one ``t`` per
computation (gold tables, and training sets with ``as_of_join: per_time``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakeloop.featuresets.scope import Scope
    from lakeloop.featuresets.spec import Feature, FeatureSet, Node

__all__ = ["IMPLS", "parse", "column", "default_for", "numba_frame"]

IMPLS = ("sql", "numba", "auto")
#: ``impl: auto``: SQL, measured faster than the numba kernel inside a feature set (docs/features.md,
#: bench/features.py)
AUTO = "sql"


def parse(node: Node) -> dict[str, Any]:
    half_life = node.duration("half_life", required=True)
    impl = node.text("impl", "auto", choices=IMPLS)
    return {"half_life": half_life, "group_by": node.text("group_by"), "impl": AUTO if impl == "auto" else impl}


def default_for(feature: Feature) -> Any:
    if feature.default is not None:
        return feature.default
    return None if feature.opts["group_by"] else 0.0


def _rate_per_us(feature: Feature) -> float:
    return math.log(2.0) / (feature.opts["half_life"].total_seconds() * 1_000_000)


def column(fs: FeatureSet, feature: Feature, scope: Scope) -> Column:
    """The SQL form, for ``groupBy(entity)`` (or ``(entity, group)`` with ``group_by``)."""
    from pyspark.sql import functions as F

    weight = F.exp(-scope.age_us(fs.time) * F.lit(_rate_per_us(feature)))
    cond = scope.condition(fs, feature)
    return F.sum(weight if cond is None else F.when(cond, weight))


def numba_frame(rows: DataFrame, fs: FeatureSet, feature: Feature, scope: Scope, group: str) -> DataFrame:
    """``(*grouping columns, value)`` with the numba kernel; ``rows`` hold the grouping column ``group``.

    ``group`` is the second grouping column (``group_by`` computed into a column, or the entity's
    second column); raises :class:`lakeloop.conf.ConfError` when the columns do not fit the kernel.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from lakeloop import kernels
    from lakeloop.conf import ConfError
    from lakeloop.featuresets.scope import micros

    key = fs.entity[0]
    types = {f.name: f.dataType for f in rows.schema.fields}
    if scope.literal is None:
        raise ConfError(f"{feature.origin}: impl numba needs one time per computation; use impl sql or "
                        "as_of_join: per_time")
    if not isinstance(types[key], T.IntegralType) or not isinstance(types[group], T.StringType):
        raise ConfError(f"{feature.origin}: impl numba needs an integer {key} and a string {group}, got "
                        f"{types[key].simpleString()} and {types[group].simpleString()}; use impl sql")
    cond = scope.condition(fs, feature)
    picked = rows if cond is None else rows.where(cond)
    picked = picked.select(F.col(key).cast("long").alias("key"), F.col(group).alias("group"),
                           F.col(fs.time).alias("ts"))
    t_ref = micros(scope.literal)
    prepared = kernels.prepare_decay_input(picked, t_ref)
    out = kernels.decay_numba(prepared, t_ref, feature.opts["half_life"].total_seconds())
    return out.select(F.col("key").cast(types[key]).alias(key), F.col("group").alias(group),
                      F.col("value").alias(feature.name))


def in_sql(fs: FeatureSet) -> FeatureSet:
    """``fs`` with every numba decay kernel replaced by its SQL formulation: the same decayed sum (they agree to
    1e-9 relative), for computations with one time per row, which the kernel (one literal time) cannot do."""
    import dataclasses

    if not any(f.kind == "decay" and f.opts.get("impl") == "numba" for f in fs.features):
        return fs
    features = tuple(dataclasses.replace(f, opts={**f.opts, "impl": "sql"})
                     if f.kind == "decay" and f.opts.get("impl") == "numba" else f for f in fs.features)
    return dataclasses.replace(fs, features=features)
