"""The recommender's hand-written gold features (the reference the declarative sets are tested against).

``conf/features/*.yaml`` and ``conf/training_sets/training_set.yaml`` declare the same tables for
:mod:`lakeloop.featuresets`; ``tests/test_featuresets_recommender.py`` proves both give equal
frames.  Bulk inference (:mod:`lakeloop.infer`) still computes its scoring features with
:func:`training_set`.  Gold tables from ``silver.events`` and ``silver.items``:

Every feature is computed *as of* a time ``t``: only events with ``t - lookback <= ts < t`` count,
so a feature row never sees an event at or after its own time.

* :func:`user_favours` -- per user: recent likes, reviews and purchases (most recent first, at most
  ``max_list_length`` each), per-category interaction counts and time-decayed category affinities.
* :func:`item_stats` -- per item: views, clicks, add-to-carts, purchases, likes, reviews, mean
  rating, CTR (clicks / views) and conversion (purchases / views).
* :func:`training_set` -- user-item rows labelled from the events in
  ``[label_ts, label_ts + label_window)`` whose features are computed as of ``label_ts``
  (point-in-time correct), with seeded negative sampling of items the user did not interact with.

``GOLD_TABLES`` are the tables these functions made (the features job now writes them from the specs).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakeloop import kernels

if TYPE_CHECKING:
    from lakeloop.conf import Conf
    from pyspark.sql import Column, DataFrame

__all__ = ["FeatureParams", "GOLD_TABLES", "UNKNOWN_CATEGORY", "day_start", "events_between",
           "item_attributes", "with_category", "category_affinity", "user_favours", "item_counts",
           "item_stats", "sample_negatives", "training_set"]

UNKNOWN_CATEGORY = "unknown"
GOLD_TABLES = ("gold.user_favours", "gold.item_stats", "gold.training_set")

# favour list name -> (event type, fields of each entry besides ts)
_FAVOURS = {
    "likes": ("like", ("item_id",)),
    "reviews": ("review", ("item_id", "rating")),
    "purchases": ("purchase", ("item_id", "price", "quantity")),
}
# item_stats count column -> event type
_ITEM_COUNTS = {"views": "view", "clicks": "click", "add_to_carts": "add_to_cart",
                "purchases": "purchase", "likes": "like", "reviews": "review"}


@dataclass(frozen=True)
class FeatureParams:
    """Windows and sizes of the feature computation (``features.*`` in conf)."""

    lookback: dt.timedelta = dt.timedelta(days=30)
    max_list_length: int = 20
    half_life: dt.timedelta = dt.timedelta(days=7)
    label_window: dt.timedelta = dt.timedelta(days=1)
    label_types: tuple[str, ...] = ("purchase",)
    negatives_per_positive: int = 4
    seed: int = 17

    def __post_init__(self) -> None:
        if self.max_list_length < 1:
            raise ValueError(f"max_list_length must be >= 1, got {self.max_list_length}")
        if self.negatives_per_positive < 0:
            raise ValueError(f"negatives_per_positive must be >= 0, got {self.negatives_per_positive}")
        for name in ("lookback", "half_life", "label_window"):
            if getattr(self, name) <= dt.timedelta(0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def from_conf(cls, conf: Conf) -> FeatureParams:
        return cls(
            lookback=dt.timedelta(days=conf["features.lookback_days"]),
            max_list_length=conf["features.max_list_length"],
            half_life=dt.timedelta(days=conf["features.half_life_days"]),
            label_window=dt.timedelta(days=conf["features.label_window_days"]),
            label_types=tuple(conf["features.label_types"]),
            negatives_per_positive=conf["features.negatives_per_positive"],
            seed=conf["features.seed"],
        )


def day_start(day: dt.date) -> dt.datetime:
    """Midnight UTC opening ``day``."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def _micros(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"timestamp {t} has no time zone; lakeloop times are UTC")
    return int(round(t.timestamp() * 1_000_000))


def _ts(t: dt.datetime) -> Column:
    from pyspark.sql import functions as F

    return F.timestamp_micros(F.lit(_micros(t)))


def events_between(events: DataFrame, start: dt.datetime, end: dt.datetime) -> DataFrame:
    """Events with ``start <= ts < end``."""
    from pyspark.sql import functions as F

    return events.where((F.col("ts") >= _ts(start)) & (F.col("ts") < _ts(end)))


def item_attributes(items: DataFrame, as_of: dt.datetime) -> DataFrame:
    """``(item_id, category, item_price)``: each item's latest record updated before ``as_of``.

    An item whose every record is newer than ``as_of`` takes its earliest record, so that items
    are never lost; category is static in practice and price is not a label.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    before = F.col("updated_at") < _ts(as_of)
    epoch = F.unix_micros(F.col("updated_at"))
    order = Window.partitionBy("item_id").orderBy(
        F.when(before, 0).otherwise(1), F.when(before, -epoch).otherwise(epoch))
    return (items.withColumn("_pick", F.row_number().over(order)).where(F.col("_pick") == 1)
            .select("item_id", F.coalesce("category", F.lit(UNKNOWN_CATEGORY)).alias("category"),
                    F.col("price").alias("item_price")))


def with_category(events: DataFrame, attributes: DataFrame) -> DataFrame:
    """Events with the item's ``category`` (``'unknown'`` for items missing from ``attributes``)."""
    from pyspark.sql import functions as F

    cats = attributes.select("item_id", F.col("category").alias("_category"))
    return (events.join(cats, "item_id", "left")
            .withColumn("category", F.coalesce("_category", F.lit(UNKNOWN_CATEGORY))).drop("_category"))


def category_affinity(events: DataFrame, as_of: dt.datetime, half_life: dt.timedelta) -> DataFrame:
    """``(user_id, category, affinity, n)`` from events with a ``category``, numba kernel in mapInArrow."""
    from pyspark.sql import functions as F

    t_ref = _micros(as_of)
    rows = events.select(F.col("user_id").alias("key"), F.col("category").alias("group"), "ts")
    out = kernels.decay_numba(kernels.prepare_decay_input(rows, t_ref), t_ref, half_life.total_seconds())
    return out.select(F.col("key").alias("user_id"), F.col("group").alias("category"),
                      F.col("value").alias("affinity"), "n")


def _sorted_map(key: str, value: str) -> Column:
    from pyspark.sql import functions as F

    return F.map_from_entries(F.array_sort(F.collect_list(F.struct(F.col(key), F.col(value)))))


def _favour_list(kind: str, event_type: str, fields: tuple[str, ...], max_len: int) -> Column:
    """Most recent first, ties broken by event id; entries are structs of ``fields`` + ``ts``."""
    from pyspark.sql import functions as F

    entry = F.struct(F.col("ts").alias("_ts"), F.col("event_id").alias("_id"),
                     *[F.col(f) for f in fields], F.col("ts"))
    keep = (F.col("type") == event_type) & (F.col("_recency") <= max_len)
    ordered = F.sort_array(F.collect_list(F.when(keep, entry)), asc=False)
    return F.transform(ordered, lambda x: F.struct(*[x[f].alias(f) for f in (*fields, "ts")])).alias(kind)


def user_favours(events: DataFrame, items: DataFrame, as_of: dt.datetime,
                 params: FeatureParams = FeatureParams()) -> DataFrame:
    """One row per user with events in ``[as_of - lookback, as_of)``; see the module docstring."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    recent = with_category(events_between(events, as_of - params.lookback, as_of),
                           item_attributes(items, as_of))
    recency = Window.partitionBy("user_id", "type").orderBy(F.col("ts").desc(), F.col("event_id").desc())
    lists = (recent.withColumn("_recency", F.row_number().over(recency)).groupBy("user_id").agg(
        *[_favour_list(kind, etype, fields, params.max_list_length)
          for kind, (etype, fields) in _FAVOURS.items()],
        F.count(F.lit(1)).alias("n_events"), F.max("ts").alias("last_event_ts")))
    counts = (recent.groupBy("user_id", "category").agg(F.count(F.lit(1)).alias("n"))
              .groupBy("user_id").agg(_sorted_map("category", "n").alias("category_counts")))
    affinity = (category_affinity(recent, as_of, params.half_life)
                .groupBy("user_id").agg(_sorted_map("category", "affinity").alias("category_affinity")))
    return (lists.join(counts, "user_id").join(affinity, "user_id")
            .withColumn("as_of", _ts(as_of))
            .select("user_id", *_FAVOURS, "category_counts", "category_affinity", "n_events",
                    "last_event_ts", "as_of"))


def _ratio(num: str, den: str) -> Column:
    from pyspark.sql import functions as F

    return F.when(F.col(den) > 0, F.col(num) / F.col(den))


def item_counts(events: DataFrame) -> DataFrame:
    """Per item: event counts by type, rating count and mean, distinct users, CTR and conversion."""
    from pyspark.sql import functions as F

    review_rating = F.when(F.col("type") == "review", F.col("rating"))
    return (events.groupBy("item_id").agg(
        *[F.count_if(F.col("type") == t).alias(name) for name, t in _ITEM_COUNTS.items()],
        F.count(review_rating).alias("ratings"), F.avg(review_rating).alias("mean_rating"),
        F.countDistinct("user_id").alias("users"))
        .withColumn("ctr", _ratio("clicks", "views"))
        .withColumn("conversion", _ratio("purchases", "views")))


def item_stats(events: DataFrame, items: DataFrame, as_of: dt.datetime,
               params: FeatureParams = FeatureParams()) -> DataFrame:
    """One row per catalog item or item with events in ``[as_of - lookback, as_of)``.

    ``popularity`` is the view count; ``ctr`` and ``conversion`` are null for items never viewed.
    """
    from pyspark.sql import functions as F

    counts = item_counts(events_between(events, as_of - params.lookback, as_of))
    zero = {c: 0 for c in (*_ITEM_COUNTS, "ratings", "users")}
    return (item_attributes(items, as_of).join(counts, "item_id", "full").fillna(zero)
            .withColumn("category", F.coalesce("category", F.lit(UNKNOWN_CATEGORY)))
            .withColumn("popularity", F.col("views"))
            .withColumn("as_of", _ts(as_of))
            .select("item_id", "category", "item_price", "popularity", *_ITEM_COUNTS, "ratings",
                    "mean_rating", "ctr", "conversion", "users", "as_of"))


def sample_negatives(positives: DataFrame, interacted: DataFrame, catalog: DataFrame, per_positive: int,
                     seed: int) -> DataFrame:
    """``(user_id, item_id)`` negatives: ``per_positive`` seeded draws from ``catalog`` per positive.

    Draws are a hash of (seed, user, positive item, draw number), so a re-run picks the same items.
    Draws that hit an item in ``interacted`` for that user are dropped, and duplicates collapse, so a
    user gets at most ``per_positive`` negatives per positive.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    session = positives.sparkSession
    items = catalog.select("item_id").distinct()
    n_items = items.count()
    if per_positive == 0 or n_items == 0:
        return session.createDataFrame([], "user_id long, item_id long")
    indexed = items.withColumn("_draw", F.row_number().over(Window.orderBy("item_id")) - 1)
    draws = (positives.select("user_id", F.col("item_id").alias("_pos"))
             .withColumn("_j", F.explode(F.sequence(F.lit(0), F.lit(per_positive - 1))))
             .withColumn("_draw", F.pmod(F.xxhash64(F.lit(seed), "user_id", "_pos", "_j"), F.lit(n_items))))
    return (draws.join(F.broadcast(indexed), "_draw").select("user_id", "item_id")
            .join(interacted.select("user_id", "item_id"), ["user_id", "item_id"], "left_anti")
            .distinct())


def training_set(events: DataFrame, items: DataFrame, label_ts: dt.datetime,
                 params: FeatureParams = FeatureParams()) -> DataFrame:
    """Labelled user-item rows, features as of ``label_ts`` (events strictly before it).

    Positives: (user, item) pairs with an event of ``label_types`` in
    ``[label_ts, label_ts + label_window)``.  Negatives: seeded draws of catalog items the user did
    not interact with in that window.  Every feature column is computed from
    ``[label_ts - lookback, label_ts)`` only.
    """
    from pyspark.sql import functions as F

    window = events_between(events, label_ts, label_ts + params.label_window)
    history = events_between(events, label_ts - params.lookback, label_ts)
    attributes = item_attributes(items, label_ts)

    positives = (window.where(F.col("type").isin(list(params.label_types)))
                 .select("user_id", "item_id").distinct())
    interacted = window.select("user_id", "item_id").distinct()
    negatives = sample_negatives(positives, interacted, attributes, params.negatives_per_positive,
                                 params.seed)
    spine = (positives.withColumn("label", F.lit(1))
             .unionByName(negatives.withColumn("label", F.lit(0)))
             .join(attributes, "item_id", "left")
             .withColumn("category", F.coalesce("category", F.lit(UNKNOWN_CATEGORY))))

    user = history.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("user_events"),
        F.count_if(F.col("type") == "purchase").alias("user_purchases"),
        F.max("ts").alias("_user_last_ts"))
    pair = history.groupBy("user_id", "item_id").agg(
        F.count(F.lit(1)).alias("user_item_events"),
        F.count_if(F.col("type") == "purchase").alias("user_item_purchases"),
        F.max("ts").alias("_pair_last_ts"))
    item = item_counts(history).select(
        "item_id", *[F.col(c).alias(f"item_{c}") for c in ("views", "clicks", "purchases", "ratings",
                                                            "mean_rating", "ctr", "conversion")])
    affinity = category_affinity(with_category(history, attributes), label_ts, params.half_life).select(
        "user_id", "category", F.col("affinity").alias("user_category_affinity"),
        F.col("n").alias("user_category_events"))

    label_time = _ts(label_ts)
    zero = {c: 0 for c in ("user_events", "user_purchases", "user_item_events", "user_item_purchases",
                           "item_views", "item_clicks", "item_purchases", "item_ratings",
                           "user_category_events")}
    rows = (spine.join(user, "user_id", "left").join(pair, ["user_id", "item_id"], "left")
            .join(item, "item_id", "left").join(affinity, ["user_id", "category"], "left")
            .fillna(zero).fillna({"user_category_affinity": 0.0})
            .withColumn("label_ts", label_time)
            .withColumn("seconds_since_user_event", _seconds_between("_user_last_ts", label_time))
            .withColumn("seconds_since_user_item", _seconds_between("_pair_last_ts", label_time)))
    return rows.select("user_id", "item_id", "label", "label_ts", "category", "item_price",
                       "user_events", "user_purchases", "seconds_since_user_event",
                       "user_category_affinity", "user_category_events",
                       "user_item_events", "user_item_purchases", "seconds_since_user_item",
                       "item_views", "item_clicks", "item_purchases", "item_ratings", "item_mean_rating",
                       "item_ctr", "item_conversion")


def _seconds_between(earlier: str, later: Column) -> Column:
    from pyspark.sql import functions as F

    return ((F.unix_micros(later) - F.unix_micros(F.col(earlier))) / 1_000_000).cast("double")
