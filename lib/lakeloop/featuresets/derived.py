"""``kind: derived``: a Spark SQL expression over the set's other features (``clicks / nullif(views, 0)``).

Derived features are computed after every other kind and after defaults are applied, in declared
order (a derived feature may use the derived features declared before it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakeloop.featuresets.spec import Feature, Node

__all__ = ["parse", "apply"]


def parse(node: Node) -> dict[str, Any]:
    return {"expr": node.text("expr", required=True)}


def apply(df: DataFrame, feature: Feature) -> DataFrame:
    from pyspark.sql import functions as F

    return df.withColumn(feature.name, F.expr(feature.opts["expr"]))
