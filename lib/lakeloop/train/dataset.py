"""A model's training rows: read the training set of its spec, check the labels for the task, split.

:func:`load_model_data` reads the ``train.days`` dt partitions of ``train.table`` up to the run date,
chooses the feature columns (``train.features``, or every numeric column but ``train.keys``, the label,
``train.time_column`` and ``dt``), casts them to double (nulls stay null: missing values), checks the
labels for ``train.task`` (:func:`check_labels`) and splits the rows (:mod:`lakeloop.train.split`).
Every problem is a :class:`~lakeloop.errors.DataQualityError` naming the table, the partitions and the cause.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from lakeloop.errors import DataQualityError
from lakeloop.train import split as splits
from lakeloop.train.base import TrainingData

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.featuresets.spec import FeatureSet, TrainingSpec

__all__ = ["feature_columns", "spec_features", "check_labels", "shuffle_labels", "load_model_data"]


def feature_columns(conf: Conf, df: DataFrame) -> list[str]:
    """The model features: ``train.features``; else the feature-set columns of the training-set spec that
    writes ``train.table`` (:func:`spec_features`); else the numeric columns of ``df`` that are not keys,
    label, time or ``dt``."""
    from pyspark.sql.types import BooleanType, NumericType

    from lakeloop.featuresets import load_specs

    if conf["train.features"]:
        return [str(c) for c in conf["train.features"]]
    specs = load_specs(conf)
    spec = next((t for t in specs.training.values() if t.table == conf["train.table"]), None)
    if spec is not None:
        return spec_features(spec, specs.sets, df)
    excluded = {*conf["train.keys"], conf["train.label"], conf["train.time_column"], "dt"}
    return [f.name for f in df.schema.fields
            if f.name not in excluded and isinstance(f.dataType, (NumericType, BooleanType))]


def spec_features(spec: TrainingSpec, sets: Mapping[str, FeatureSet], df: DataFrame) -> list[str]:
    """The columns of ``spec`` that come from feature sets, in its column order, keeping those that are
    numeric in ``df`` (a name column is not a model feature) and those ``df`` lacks (the
    caller reports them)."""
    from pyspark.sql.types import NumericType

    from lakeloop.featuresets.sets import training_feature_columns

    types = {f.name: f.dataType for f in df.schema.fields}
    return [c for c in training_feature_columns(spec, sets) if c not in types or isinstance(types[c], NumericType)]


def check_labels(df: DataFrame, task: str, label: str, where: str, classes: int | None = None) -> int:
    """Raise DataQualityError when a label does not fit ``task``; returns the number of classes (0: not multiclass)."""
    from pyspark.sql import functions as F

    y = F.col(label)
    if task == "binary":
        bad, allowed = y.isNull() | ~y.isin(0, 1), "0 or 1"
    elif task == "regression":
        value = y.cast("double")
        bad, allowed = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf")), "a finite number"
    else:
        top = classes if classes is not None else None
        bad = y.isNull() | (y.cast("int") != y) | (y < 0)
        if top is not None:
            bad = bad | (y >= top)
        allowed = f"a class index 0..{top - 1}" if top else "a class index 0, 1, 2, ..."
    found = df.where(bad).select(label).limit(1).collect()
    if found:
        raise DataQualityError(f"{where}: {task} label {label} must be {allowed} on every row, found {found[0][0]!r}")
    if task != "multiclass":
        return 0
    k = classes if classes is not None else int(df.agg(F.max(y)).first()[0] or 0) + 1
    if k < 3:
        raise DataQualityError(f"{where}: a multiclass label needs at least 3 classes, found {k} (use task binary)")
    return k


def shuffle_labels(df: DataFrame, label: str, order: list[str], seed: int) -> DataFrame:
    """``df`` with its labels permuted across rows (seeded): same label counts, no signal (a gate diagnostic).

    Two global row numberings: all rows pass one task, meant for small training sets.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = df.drop(label).withColumn("_row", F.row_number().over(Window.orderBy(*order)))
    labels = (df.select(label, F.rand(seed).alias("_r"))
              .withColumn("_row", F.row_number().over(Window.orderBy("_r"))).drop("_r"))
    return rows.join(labels, "_row").drop("_row").select(*df.columns)


def _check_sides(train: DataFrame, holdout: DataFrame, task: str, label: str, classes: int, where: str) -> None:
    if task == "regression":
        return
    wanted = set(range(classes)) if task == "multiclass" else {0, 1}
    for side, part in (("training", train), ("holdout", holdout)):
        found = {int(r[0]) for r in part.select(label).distinct().collect()}
        if task == "binary" and found != wanted:
            raise DataQualityError(f"{where}: the {side} rows need both labels 0 and 1, "
                                   f"found {sorted(found) or 'no rows'}")
        if task == "multiclass" and side == "training" and found != wanted:
            raise DataQualityError(f"{where}: the training rows lack classes {sorted(wanted - found)} "
                                   f"of 0..{classes - 1}")


def load_model_data(spark: SparkSession, conf: Conf, run_date: dt.date, *, shuffle: bool = False) -> TrainingData:
    """The model's train/holdout frames for ``run_date`` (see the module docstring)."""
    from pyspark.sql import functions as F

    from lakeloop.lake import Lake

    lake, name = Lake.from_conf(conf), conf["train.table"]
    uri = lake.uri(name)
    if not lake.exists(uri):
        raise DataQualityError(f"{name}: no table at {uri}; run the features job first")
    version = lake.version(uri)
    first = run_date - dt.timedelta(days=conf["train.days"] - 1)
    where = f"{name} dt >= '{first.isoformat()}' AND dt <= '{run_date.isoformat()}'"
    frame = lake.read(spark, uri, version=version, where=where.split(" ", 1)[1])
    task, label, keys = conf["train.task"], conf["train.label"], list(conf["train.keys"])
    features = feature_columns(conf, frame)
    time_col = conf["train.time_column"]
    split_col = conf["train.split_column"] if conf["train.split"] == "hash" else time_col
    needed = [*keys, label, *features, *([split_col] if split_col else [])]
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        raise DataQualityError(f"{where}: missing columns {', '.join(missing)}")
    if not features:
        raise DataQualityError(f"{where}: no numeric feature columns")
    if frame.limit(1).count() == 0:
        raise DataQualityError(f"{where}: no rows")
    classes = check_labels(frame, task, label, where, conf["train.classes"])
    y = F.col(label).cast("double" if task == "regression" else "int").alias(label)
    extra = [c for c in dict.fromkeys([*keys, *([split_col] if split_col else [])]) if c not in features]
    frame = frame.select(*extra, y, *[F.col(c).cast("double").alias(c) for c in features])
    seed = conf["train.seed"]
    train, holdout, result = splits.split(frame, conf["train.split"], conf["train.holdout_fraction"], seed,
                                          split_col, conf["train.split_tolerance"])
    if shuffle:
        train = shuffle_labels(train, label, keys or features, seed)
    train, holdout = train.cache(), holdout.cache()
    _check_sides(train, holdout, task, label, classes, where)
    return TrainingData(train=train, valid=holdout, features=features, label=label,
                        input_versions={name: version}, task=task, classes=classes, split=result.as_dict())
