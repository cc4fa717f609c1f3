"""The recommender's rows to score: candidate user x item pairs of a run date (its scoring generator).

``conf/models/ranker.yaml`` names :func:`candidates` as ``scoring.rows.generator``; its settings are the
conf keys ``infer.candidates_per_user`` and ``infer.categories_per_user``.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakeloop.conf import Conf
    from lakeloop.featuresets.compute import Reader
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["candidates", "candidate_pairs"]


def candidates(spark: SparkSession, conf: Conf, run_date: dt.date, read: Reader) -> DataFrame:
    """The scoring generator: :func:`candidate_pairs` of the run date's user favours and item stats."""
    return candidate_pairs(read("gold.user_favours"), read("gold.item_stats"), conf["infer.candidates_per_user"],
                           conf["infer.categories_per_user"])


def candidate_pairs(favours: DataFrame, stats: DataFrame, per_user: int, categories: int) -> DataFrame:
    """``(user_id, item_id)``: at most ``per_user`` items for every user of ``favours``.

    Up to half are the user's recent items (likes, reviews, purchases, most recent first); the rest
    are the most popular items of the user's ``categories`` favourite categories (by decayed
    affinity), taken in turn from each category.  Deterministic: ties break on ids.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if per_user < 1 or categories < 1:
        raise ValueError(f"candidates per user ({per_user}) and categories ({categories}) must be >= 1")
    recent_ids = F.concat(*[F.transform(F.coalesce(F.col(c), F.array()), lambda x: x["item_id"])
                            for c in ("likes", "reviews", "purchases")])
    recent = (favours.select("user_id", F.posexplode(F.array_distinct(recent_ids)).alias("_ord", "item_id"))
              .where(F.col("_ord") < max(per_user // 2, 1)))
    top_cats = (favours.select("user_id", F.explode("category_affinity").alias("category", "_affinity"))
                .withColumn("_cat_rank", F.row_number().over(
                    Window.partitionBy("user_id").orderBy(F.col("_affinity").desc(), "category")) - 1)
                .where(F.col("_cat_rank") < categories))
    popular = (stats.select("item_id", "category", "popularity")
               .withColumn("_item_rank", F.row_number().over(
                   Window.partitionBy("category").orderBy(F.col("popularity").desc(), "item_id")) - 1)
               .where(F.col("_item_rank") < per_user))
    by_category = (top_cats.join(popular, "category")
                   .select("user_id", "item_id",
                           (F.col("_item_rank") * categories + F.col("_cat_rank") + per_user).alias("_ord")))
    pick = Window.partitionBy("user_id").orderBy("_ord", "item_id")
    return (recent.unionByName(by_category).groupBy("user_id", "item_id").agg(F.min("_ord").alias("_ord"))
            .withColumn("_n", F.row_number().over(pick)).where(F.col("_n") <= per_user)
            .select("user_id", "item_id"))
