"""The ranker's feature list, keys and user-level holdout split, for tests and benchmarks.

The engine reads a model's features from its training-set spec and its split from the model spec
(``conf/models/ranker.yaml``: a hash split on ``user_id``); these are the same choices written out.

Holdout split
-------------
``pmod(xxhash64(user_id, seed), 10000) < holdout_fraction * 10000``: all rows of one user land on
the same side, the split is the same for every re-run of a date and every model the gate compares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["FEATURES", "LABEL", "KEYS", "split_holdout", "shuffle_labels"]

LABEL = "label"
KEYS = ("user_id", "item_id")
# the numeric columns of gold.training_set the ranker uses (conf/training_sets/training_set.yaml); the
# category name is not a feature (it enters through user_category_affinity / user_category_events)
FEATURES = ["item_price", "user_events", "user_purchases", "seconds_since_user_event",
            "user_category_affinity", "user_category_events", "user_item_events", "user_item_purchases",
            "seconds_since_user_item", "item_views", "item_clicks", "item_purchases", "item_ratings",
            "item_mean_rating", "item_ctr", "item_conversion"]


def split_holdout(df: DataFrame, fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, holdout) by the seeded user hash of the module docstring (:mod:`lakeloop.train.split`)."""
    from lakeloop.train.split import holdout_condition

    held, _ = holdout_condition(df, "hash", fraction, seed, "user_id")
    return df.where(~held), df.where(held)


def shuffle_labels(df: DataFrame, seed: int) -> DataFrame:
    """``df`` with its labels permuted across rows (seeded; :func:`lakeloop.train.dataset.shuffle_labels`)."""
    from lakeloop.train.dataset import shuffle_labels as shuffle

    return shuffle(df, LABEL, list(KEYS), seed)
