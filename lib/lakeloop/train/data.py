"""The built-in ranker's feature list and its user-level holdout split (models read their data with
:func:`lakeloop.train.dataset.load_model_data`).

Holdout split
-------------
A user-level seeded hash split: a row is in the holdout when
``pmod(xxhash64(user_id, seed), 10000) < holdout_fraction * 10000``.  All rows of one user land on
the same side (no user leaks between train and holdout), the split is the same for every re-run of
a date and for every model compared by the gate, and it needs no shuffle.  The training set of a run
date has a single label time (the start of that day), so a time-based split inside one date is not
possible; ``train.days`` > 1 trains on several dates with the same user split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakeloop.conf import Conf

__all__ = ["FEATURES", "LABEL", "KEYS", "split_holdout", "shuffle_labels", "feature_columns"]

LABEL = "label"
KEYS = ("user_id", "item_id")
# numeric columns of gold.training_set the models use; ids, label_ts, dt and the category name are not
# features (the category enters through user_category_affinity / user_category_events).  The list is
# read from the training-set spec that writes train.table (feature_columns); this literal is the
# recommender's list, used when no spec declares the table
FEATURES = ["item_price", "user_events", "user_purchases", "seconds_since_user_event",
            "user_category_affinity", "user_category_events", "user_item_events", "user_item_purchases",
            "seconds_since_user_item", "item_views", "item_clicks", "item_purchases", "item_ratings",
            "item_mean_rating", "item_ctr", "item_conversion"]
_BUCKETS = 10_000


def feature_columns(conf: Conf, df: DataFrame) -> list[str]:
    """The model features: the numeric feature-set columns of the training-set spec writing ``train.table``.

    Columns of that spec that come from feature sets (``conf/training_sets/*.yaml``), in its column
    order, keeping those that are numeric in ``df`` (a category name is not a model feature) and
    those ``df`` lacks (:func:`check_training_frame` reports them); :data:`FEATURES` when no spec
    declares ``train.table``.
    """
    from pyspark.sql.types import NumericType

    from lakeloop.featuresets import load_specs

    specs = load_specs(conf)
    spec = next((t for t in specs.training.values() if t.table == conf["train.table"]), None)
    if spec is None:
        return list(FEATURES)
    types = {f.name: f.dataType for f in df.schema.fields}
    return [c for c in spec.feature_columns(specs.sets) if c not in types or isinstance(types[c], NumericType)]


def split_holdout(df: DataFrame, fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, holdout) by the seeded user hash described in the module docstring."""
    from pyspark.sql import functions as F

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction {fraction}: expected a number between 0 and 1")
    bucket = F.pmod(F.xxhash64(F.col("user_id"), F.lit(seed)), F.lit(_BUCKETS))
    held = bucket < F.lit(int(round(fraction * _BUCKETS)))
    return df.where(~held), df.where(held)


def shuffle_labels(df: DataFrame, seed: int) -> DataFrame:
    """``df`` with its labels permuted across rows (seeded): same label counts, no signal.

    A diagnostic for the gate (a model trained on it must be refused).  The permutation uses two
    global row numberings, so it moves all rows through one task: meant for small training sets.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.orderBy(*KEYS)
    rows = df.drop(LABEL).withColumn("_row", F.row_number().over(order))
    labels = (df.select(LABEL, F.rand(seed).alias("_r"))
              .withColumn("_row", F.row_number().over(Window.orderBy("_r"))).drop("_r"))
    return rows.join(labels, "_row").drop("_row").select(*df.columns)
