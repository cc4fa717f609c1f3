"""``kind: bag_of_words``: a hashed bag of words of a text expression over the rows in ``[t - window, t)``.

Every matching row's text (``expr``, Spark SQL over a source row; ``lowercase`` first, by default) is
split into the tokens matching ``pattern`` (a Java regular expression, default letters, digits and
``_``); tokens shorter than ``min_length`` characters are dropped; token ``w`` falls into bucket
``pmod(xxhash64(w), buckets)`` (Spark's 64-bit xxHash, seed 42, of the token's UTF-8 bytes).  Per
entity the feature is one ``double`` per bucket, the ``buckets`` columns ``<name>_0`` ..
``<name>_<buckets-1>``: the number of the entity's tokens in the bucket (``weight: count``), or that
number over all of its kept tokens (``weight: tf``).  An entity without tokens gets 0.0 everywhere.

Inside the set (for a ``derived`` feature) the feature is the array of those values, ``name[i]``.
Computed as one frame: the tokens exploded, then ``groupBy(entity, bucket)`` and ``groupBy(entity)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from lakeloop.featuresets.scope import Scope
    from lakeloop.featuresets.spec import Feature, FeatureSet, Node

__all__ = ["WEIGHTS", "MAX_BUCKETS", "PATTERN", "parse", "frame", "output_names", "output_columns"]

WEIGHTS = ("count", "tf")
#: most buckets (output columns) of one feature
MAX_BUCKETS = 4096
#: default token pattern: runs of letters, digits and underscores in any script
PATTERN = r"[\p{L}\p{N}_]+"
_TOKEN, _BUCKET, _N, _MAP, _TOTAL = "_tok", "_bucket", "_n", "_m", "_total"


def parse(node: Node) -> dict[str, Any]:
    expr = node.text("expr", required=True)
    buckets = node.integer("buckets", minimum=1)
    if buckets is None or buckets > MAX_BUCKETS:
        raise node.error(f"expected an integer from 1 to {MAX_BUCKETS} (the number of output columns), "
                         f"got {node.raw('buckets')!r}", "buckets")
    return {"expr": expr, "buckets": buckets, "lowercase": node.flag("lowercase", True),
            "min_length": node.integer("min_length", 1, minimum=1), "pattern": node.text("pattern", PATTERN),
            "weight": node.text("weight", "count", choices=WEIGHTS)}


def default_for(feature: Feature) -> Any:
    """An entity without tokens: 0.0 in every bucket."""
    return [0.0] * feature.opts["buckets"]


def output_names(feature: Feature, name: str) -> list[str]:
    """The output columns of the feature under ``name``: ``name_0`` .. ``name_<buckets-1>``."""
    return [f"{name}_{i}" for i in range(feature.opts["buckets"])]


def output_columns(feature: Feature, source: str, name: str) -> list[Column]:
    """The array column ``source`` as the output columns named from ``name``."""
    from pyspark.sql import functions as F

    return [F.col(source)[i].alias(out) for i, out in enumerate(output_names(feature, name))]


def tokens(rows: DataFrame, feature: Feature, keys: list[str]) -> DataFrame:
    """``(*keys, _tok)``: one row per kept token of every row."""
    from pyspark.sql import functions as F

    opts = feature.opts
    text = F.expr(opts["expr"]).cast("string")
    if opts["lowercase"]:
        text = F.lower(text)
    found = F.regexp_extract_all(text, F.lit(opts["pattern"]), F.lit(0))
    out = rows.select(*keys, F.explode(found).alias(_TOKEN))
    return out.where(F.length(_TOKEN) >= opts["min_length"])


def frame(rows: DataFrame, fs: FeatureSet, feature: Feature, scope: Scope, keys: list[str]) -> DataFrame:
    """``(*keys, name)``: per key the array of the ``buckets`` weights (keys without tokens are absent)."""
    from pyspark.sql import functions as F

    cond = scope.condition(fs, feature)
    picked = rows if cond is None else rows.where(cond)
    n = feature.opts["buckets"]
    bucket = F.pmod(F.xxhash64(_TOKEN), F.lit(n)).cast("int").alias(_BUCKET)
    per_bucket = tokens(picked, feature, keys).groupBy(*keys, bucket).agg(F.count(F.lit(1)).alias(_N))
    entries = F.map_from_entries(F.collect_list(F.struct(_BUCKET, _N)))
    per_key = per_bucket.groupBy(*keys).agg(entries.alias(_MAP), F.sum(_N).alias(_TOTAL))
    tf = feature.opts["weight"] == "tf"

    def weight(i: Column) -> Column:
        count = F.coalesce(F.col(_MAP)[i], F.lit(0)).cast("double")
        return count / F.col(_TOTAL) if tf else count

    return per_key.select(*keys, F.transform(F.sequence(F.lit(0), F.lit(n - 1)), weight).alias(feature.name))
