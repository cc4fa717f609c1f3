"""The gold training set as model input: feature columns, validation, seeded holdout split.

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

import datetime as dt
from typing import TYPE_CHECKING

from lakeloop.errors import DataQualityError
from lakeloop.train.base import TrainingData

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf

__all__ = ["FEATURES", "LABEL", "KEYS", "load_training_data", "split_holdout", "shuffle_labels",
           "check_training_frame", "feature_columns"]

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


def check_training_frame(df: DataFrame, where: str, features: list[str] | None = None) -> None:
    """Raise :class:`DataQualityError` naming ``where`` when columns are missing or labels are not 0/1."""
    from pyspark.sql import functions as F

    missing = [c for c in (*KEYS, LABEL, *(FEATURES if features is None else features)) if c not in df.columns]
    if missing:
        raise DataQualityError(f"{where}: missing columns {', '.join(missing)}")
    bad = df.where(F.col(LABEL).isNull() | ~F.col(LABEL).isin(0, 1)).limit(1).count()
    if bad:
        raise DataQualityError(f"{where}: label must be 0 or 1 on every row")


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


def load_training_data(spark: SparkSession, conf: Conf, run_date: dt.date, *,
                       shuffle: bool = False) -> TrainingData:
    """The ``train.days`` dt partitions of ``train.table`` up to ``run_date``, split into train/holdout.

    Features are cast to double (nulls stay null: missing values for the backends).  Raises
    :class:`DataQualityError` when the partitions are empty, lack columns, hold labels other than 0/1,
    or either side of the split lacks one of the two classes.
    """
    from pyspark.sql import functions as F

    from lakeloop.lake import Lake

    lake, name = Lake.from_conf(conf), conf["train.table"]
    uri = lake.uri(name)
    if not lake.exists(uri):
        raise DataQualityError(f"{name}: no table at {uri}; run the features job first")
    version = lake.version(uri)
    first = run_date - dt.timedelta(days=conf["train.days"] - 1)
    where = f"dt >= '{first.isoformat()}' AND dt <= '{run_date.isoformat()}'"
    frame = lake.read(spark, uri, version=version, where=where)
    features = feature_columns(conf, frame)
    check_training_frame(frame, f"{name} {where}", features)
    frame = frame.select(*KEYS, F.col(LABEL).cast("int").alias(LABEL),
                         *[F.col(c).cast("double").alias(c) for c in features])
    seed = conf["train.seed"]
    train, holdout = split_holdout(frame, conf["train.holdout_fraction"], seed)
    if shuffle:
        train = shuffle_labels(train, seed)
    train, holdout = train.cache(), holdout.cache()
    for side, part in (("training", train), ("holdout", holdout)):
        classes = {r[0] for r in part.select(LABEL).distinct().collect()}
        if classes != {0, 1}:
            raise DataQualityError(f"{name} {where}: the {side} rows need both labels 0 and 1, "
                                   f"found {sorted(classes) or 'no rows'}")
    return TrainingData(train=train, valid=holdout, features=features, label=LABEL,
                        input_versions={name: version})
