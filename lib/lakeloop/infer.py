"""Bulk inference: score candidate user x item pairs of a run date, write ``gold.predictions`` and
push each user's top-N items to the serving store.

:func:`infer_for_date` is the body of ``jobs/infer.py``:

1. :func:`resolve_model` -- the registered model version holding ``@champion`` (or a given version)
   and the URI of its artifacts.
2. :func:`candidates` -- per user, the most popular items of the user's favourite categories plus
   the items the user recently liked, reviewed or bought, at most ``infer.candidates_per_user``.
3. :func:`scoring_frame` -- the training features of every candidate pair as of the end of the run
   date, computed by :func:`lakeloop.features.training_set` itself (see below).
4. :func:`score` -- ``mapInArrow``: each Python worker loads the model once (module-level cache
   keyed by the artifact URI) and scores Arrow batches as numpy matrices; an xgboost model is
   scored with ``Booster.inplace_predict``, any other flavour through ``mlflow.pyfunc``.  A ``bigdl``
   model is scored by BigDL itself where BigDL is installed (the Spark 3.5 runtime, where
   ``spark-submit.sh`` sends such an ``infer``), otherwise by its numpy pyfunc.
5. The date's partition of ``infer.table`` is replaced; the top ``infer.top_n`` items per user are
   loaded into the serving store as a new version and switched to only when every key arrived
   (:func:`lakeloop.serving.load_dataframe`).

Same features as training
-------------------------
``training_set(events, items, label_ts)`` labels the pairs with an event of ``label_types`` in
``[label_ts, label_ts + label_window)`` and computes every feature from the events before
``label_ts`` only.  Scoring therefore hands it the history before the end of the run date plus one
synthetic label event per candidate pair at that instant, with negative sampling off: its rows are
exactly the candidates, with features computed by the very code the model was trained on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakeloop import features
from lakeloop.errors import DataQualityError, LakeloopError
from lakeloop.job import JobResult
from lakeloop.lake import Lake
from lakeloop.train.data import FEATURES

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.serving import ServingStore
    from lakeloop.session import RunContext

__all__ = ["ModelRef", "InferResult", "ModelNotFound", "resolve_model", "candidates", "scoring_frame",
           "score", "load_scorer", "top_items", "serving_version", "infer_for_date", "check_scoring_rows"]

log = logging.getLogger(__name__)

SCORE = "score"
RANK = "rank"
KEYS = ("user_id", "item_id")


class ModelNotFound(LakeloopError):
    """The registry has no such model version (or no ``@champion`` yet)."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and where its artifacts are (what executors load)."""

    name: str
    version: str
    artifact_uri: str
    flavors: tuple[str, ...] = ()


@dataclass
class InferResult:
    """What one inference run produced."""

    model: ModelRef
    rows: int
    users: int
    serving_version: str
    model_loads: int
    scoring_partitions: int
    table_version: int | None = None


# -- model --------------------------------------------------------------------------------------------
def resolve_model(conf: Conf, version: str | int | None = None) -> ModelRef:
    """``mlflow.model_name`` at ``version``, or the version holding ``@champion`` when None."""
    from mlflow.exceptions import MlflowException

    from lakeloop.train import registry

    name = conf["mlflow.model_name"]
    registry.setup(conf)
    client = registry.client(conf)
    try:
        mv = (client.get_model_version(name, str(version)) if version is not None
              else client.get_model_version_by_alias(name, registry.CHAMPION))
        uri = client.get_model_version_download_uri(name, mv.version)
    except MlflowException as exc:
        wanted = f"version {version}" if version is not None else f"@{registry.CHAMPION}"
        raise ModelNotFound(f"model {name} {wanted} not found in {registry.registry_uri(conf)}: "
                            f"{exc.message}") from None
    return ModelRef(name=name, version=str(mv.version), artifact_uri=uri,
                    flavors=_flavors(f"models:/{name}/{mv.version}"))


def _flavors(model_uri: str) -> tuple[str, ...]:
    from mlflow.models import get_model_info

    return tuple(get_model_info(model_uri).flavors)


class _Scorer:
    """Positive-class probabilities of a loaded model for a float32 feature matrix."""

    def __init__(self, ref: ModelRef, features: Sequence[str]) -> None:
        self.features = list(features)
        if "xgboost" in ref.flavors:
            import mlflow.xgboost

            booster = mlflow.xgboost.load_model(ref.artifact_uri)
            # a Spark task owns one core; more threads would fight the other tasks
            booster.set_param({"nthread": 1})
            if booster.feature_names and list(booster.feature_names) != self.features:
                raise LakeloopError(f"model {ref.name}/{ref.version} expects features {booster.feature_names}, "
                                    f"the scoring frame has {self.features}")
            self._booster, self._pyfunc = booster, None
        else:
            import mlflow.pyfunc

            self._booster, self._pyfunc = None, mlflow.pyfunc.load_model(ref.artifact_uri)

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        import numpy as np

        if self._booster is not None:
            return self._booster.inplace_predict(matrix, validate_features=False)
        import pandas as pd

        out = np.asarray(self._pyfunc.predict(pd.DataFrame(matrix.astype("float64"), columns=self.features)))
        return out[:, -1] if out.ndim == 2 else out


# worker-side cache: Python workers are reused across tasks (spark.python.worker.reuse), so every
# partition after the first one a worker runs finds the model here
_SCORERS: dict[tuple[str, tuple[str, ...]], _Scorer] = {}
_SCORERS_LOCK = threading.Lock()


def load_scorer(ref: ModelRef, features: Sequence[str]) -> tuple[_Scorer, bool]:
    """This process's scorer of ``ref`` and whether it was loaded by this call."""
    key = (ref.artifact_uri, tuple(features))
    with _SCORERS_LOCK:
        scorer = _SCORERS.get(key)
        if scorer is not None:
            return scorer, False
        scorer = _SCORERS[key] = _Scorer(ref, features)
        return scorer, True


def feature_matrix(batch: pa.RecordBatch, columns: Sequence[str]) -> np.ndarray:
    """A C-ordered float32 matrix of ``columns`` (nulls as NaN: missing values for the model)."""
    import numpy as np

    matrix = np.empty((batch.num_rows, len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        matrix[:, j] = batch.column(name).to_numpy(zero_copy_only=False)
    return matrix


@dataclass(frozen=True)
class _ScoreBatches:
    """The ``mapInArrow`` function; a module-level class so that workers use this module's cache."""

    ref: ModelRef
    features: tuple[str, ...]
    keep: tuple[str, ...]
    loads: Accumulator | None = None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        scorer, loaded = load_scorer(self.ref, self.features)
        if loaded and self.loads is not None:
            self.loads.add(1)
        for batch in batches:
            scores = scorer(feature_matrix(batch, self.features)).astype("float64", copy=False)
            yield pa.RecordBatch.from_arrays([*(batch.column(c) for c in self.keep), pa.array(scores)],
                                             names=[*self.keep, SCORE])


def score(df: DataFrame, ref: ModelRef, features: Sequence[str] = FEATURES, keep: Sequence[str] = KEYS,
          loads: Accumulator | None = None) -> DataFrame:
    """``keep`` columns of ``df`` plus ``score``, the model's positive-class probability.

    Features are cast to double before they leave the JVM.  ``loads`` (an integer accumulator)
    counts the model loads in the workers.  The Arrow batch size is
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` when the frame is computed.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, StructField, StructType

    missing = [c for c in (*keep, *features) if c not in df.columns]
    if missing:
        raise LakeloopError(f"scoring frame lacks columns {', '.join(missing)}")
    inputs = df.select(*keep, *[F.col(c).cast("double").alias(c) for c in features if c not in keep])
    if "bigdl" in ref.flavors and importlib.util.find_spec("bigdl") is not None:
        return _score_bigdl(inputs, ref, features, keep, loads)
    schema = StructType([*(inputs.schema[c] for c in keep), StructField(SCORE, DoubleType(), True)])
    return inputs.mapInArrow(_ScoreBatches(ref, tuple(features), tuple(keep), loads), schema)


def _score_bigdl(inputs: DataFrame, ref: ModelRef, features: Sequence[str], keep: Sequence[str],
                 loads: Accumulator | None) -> DataFrame:
    """A ``bigdl`` model in the Spark 3.5 runtime: scored by BigDL itself (:func:`lakeloop.train.bigdl.score_frame`)."""
    import mlflow.artifacts

    from lakeloop.train.bigdl import score_frame

    local = mlflow.artifacts.download_artifacts(artifact_uri=ref.artifact_uri)
    if loads is not None:
        loads.add(1)  # loaded once, on the driver; BigDL broadcasts it
    return score_frame(inputs, local, list(features), list(keep), SCORE)


# -- candidates and features ---------------------------------------------------------------------------
def candidates(favours: DataFrame, stats: DataFrame, per_user: int, categories: int) -> DataFrame:
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


def scoring_frame(events: DataFrame, items: DataFrame, pairs: DataFrame, as_of: dt.datetime,
                  params: features.FeatureParams) -> DataFrame:
    """``(user_id, item_id, *FEATURES)`` for ``pairs``, features as of ``as_of`` (see module docstring)."""
    from pyspark.sql import functions as F

    history = events.where(F.col("ts") < F.timestamp_micros(F.lit(_micros(as_of))))
    marks = (pairs.select("user_id", "item_id").distinct()
             .withColumn("type", F.lit(params.label_types[0]))
             .withColumn("ts", F.timestamp_micros(F.lit(_micros(as_of))))
             .withColumn("event_id", F.concat(F.lit("_score_"), F.col("user_id").cast("string"), F.lit("_"),
                                              F.col("item_id").cast("string"))))
    marks = marks.select(*[F.col(f.name).cast(f.dataType) if f.name in marks.columns
                           else F.lit(None).cast(f.dataType).alias(f.name) for f in history.schema.fields])
    rows = features.training_set(history.unionByName(marks), items, as_of,
                                 dataclasses.replace(params, negatives_per_positive=0))
    return rows.select(*KEYS, *[F.col(c).cast("double").alias(c) for c in FEATURES])


def _micros(t: dt.datetime) -> int:
    return int(round(t.timestamp() * 1_000_000))


# -- outputs -------------------------------------------------------------------------------------------
def top_items(predictions: DataFrame, n: int, partitions: int) -> DataFrame:
    """``(user_id, top_items)``: each user's ``n`` best items, ``[{item_id, score}]`` best first."""
    from pyspark.sql import functions as F

    entry = F.struct(F.col(RANK), F.col("item_id"), F.col(SCORE))
    return (predictions.where(F.col(RANK) <= n).repartition(partitions, "user_id")
            .groupBy("user_id")
            .agg(F.array_sort(F.collect_list(entry)).alias("_top"))
            .select("user_id", F.transform("_top", lambda x: F.struct(x["item_id"].alias("item_id"),
                                                                      x[SCORE].alias(SCORE))).alias("top_items")))


def serving_version(run_date: dt.date, model_version: str, run_id: str) -> str:
    """The serving version name of a run: ``<date>-v<model version>-<run id>``."""
    return f"{run_date.isoformat()}-v{model_version}-{run_id}"


def push_top_items(store: ServingStore, top: DataFrame, version: str) -> int:
    """Load ``top`` as ``version`` and switch to it; returns the users loaded."""
    from lakeloop.serving import load_dataframe

    return load_dataframe(store, top, version, "user_id", "top_items")


def _read_gold(spark: SparkSession, lake: Lake, name: str, day: str) -> DataFrame:
    uri = lake.uri(name)
    if not lake.exists(uri):
        raise LakeloopError(f"{name}: no table at {uri}; run the features job for {day} first")
    return lake.read(spark, uri, where=f"dt = '{day}'")


def _silver_inputs(spark: SparkSession, lake: Lake, run_date: dt.date,
                   params: features.FeatureParams) -> tuple[DataFrame, DataFrame]:
    first = (features.day_start(run_date) - params.lookback - dt.timedelta(days=1)).date().isoformat()
    day = run_date.isoformat()
    events = lake.read(spark, "silver.events", where=f"dt >= '{first}' AND dt <= '{day}'")
    items = lake.read(spark, "silver.items", where=f"dt <= '{day}'")
    return events, items


def _scored(spark: SparkSession, conf: Conf, run_date: dt.date, ref: ModelRef, loads: Accumulator) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    params = features.FeatureParams.from_conf(conf)
    day, lake = run_date.isoformat(), Lake.from_conf(conf)
    pairs = candidates(_read_gold(spark, lake, "gold.user_favours", day),
                       _read_gold(spark, lake, "gold.item_stats", day),
                       conf["infer.candidates_per_user"], conf["infer.categories_per_user"])
    events, items = _silver_inputs(spark, lake, run_date, params)
    as_of = features.day_start(run_date) + dt.timedelta(days=1)
    frame = scoring_frame(events, items, pairs, as_of, params)
    # an explicit count is kept by adaptive execution: the scoring tasks spread over the cores
    # and each user's rows stay in one partition for the ranking
    frame = frame.repartition(int(spark.conf.get("spark.sql.shuffle.partitions")), "user_id").persist()
    check_scoring_rows(frame.count(), conf["infer.min_rows"], f"{conf['infer.table']} dt={day}")
    rank = F.row_number().over(Window.partitionBy("user_id").orderBy(F.col(SCORE).desc(), "item_id"))
    return score(frame, ref, loads=loads).withColumn(RANK, rank)


def check_scoring_rows(rows: int, min_rows: int, where: str) -> None:
    """DataQualityError (exit 3) when fewer than ``min_rows`` (at least 1) rows are to be scored.

    Raised before anything is written: the predictions table and the serving store keep their versions.
    """
    wanted = max(1, min_rows)
    if rows < wanted:
        raise DataQualityError(f"{where}: {rows} rows to score, fewer than the minimum {wanted} (infer.min_rows / "
                               "the model spec's scoring.min_rows); the predictions table and the serving store "
                               "are left unchanged")


def infer_for_date(spark: SparkSession, conf: Conf, run_date: dt.date, run_id: str, *,
                   model_version: str | int | None = None, model: str | None = None) -> InferResult:
    """Score the candidates of ``run_date``, replace its ``infer.table`` partition, load the serving store.

    ``model`` names the model spec (default: the app's model, :func:`lakeloop.train.spec.model_conf`):
    its registered name and ``scoring.min_rows``.  Fewer rows to score than that minimum is a
    :class:`~lakeloop.errors.DataQualityError` before anything is written.
    """
    from pyspark.sql import functions as F

    from lakeloop.serving import open_store
    from lakeloop.train.spec import model_conf

    conf = model_conf(conf, model)
    ref, lake = resolve_model(conf, model_version), Lake.from_conf(conf)
    log.info("scoring with %s version %s (%s)", ref.name, ref.version, ", ".join(ref.flavors))
    day = run_date.isoformat()
    loads = spark.sparkContext.accumulator(0)
    scored = (_scored(spark, conf, run_date, ref, loads)
              .withColumn("model_name", F.lit(ref.name)).withColumn("model_version", F.lit(ref.version))
              .withColumn("run_id", F.lit(run_id))
              .withColumn("scored_at", F.current_timestamp()).withColumn("dt", F.lit(day)))
    uri = lake.uri(conf["infer.table"])
    batch_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(batch_key)
    spark.conf.set(batch_key, str(conf["infer.batch_size"]))
    try:
        written = lake.write(scored, uri, mode="overwrite", partition_by=["dt"], replace_where=f"dt = '{day}'")
    finally:
        spark.conf.set(batch_key, previous)
    predictions = lake.read(spark, uri, where=f"dt = '{day}'")
    rows = predictions.count()
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    version = serving_version(run_date, ref.version, run_id)
    users = push_top_items(open_store(conf), top_items(predictions, conf["infer.top_n"], partitions), version)
    log.info("%d predictions for %d users; serving version %s", rows, users, version)
    return InferResult(model=ref, rows=rows, users=users, serving_version=version, model_loads=loads.value,
                       scoring_partitions=partitions, table_version=written.version)


DESCRIPTION = "bulk scoring of --date's candidates -> gold.predictions + serving store"


def add_arguments(parser) -> None:
    """``--model-version N`` (default: the ``@champion`` alias)."""
    parser.add_argument("--model-version", default=None, metavar="N",
                        help="registered model version to use (default: the @champion alias)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="model spec conf/models/NAME.yaml (default: train.model, or the only spec)")


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[InferResult]:
    """The ``infer`` job: score, replace the date's predictions, switch the serving store."""
    result = infer_for_date(spark, ctx.conf, ctx.run_date, ctx.run_id, model_version=args.model_version,
                            model=getattr(args, "model", None))
    ctx.log.info("model %s version %s: %d predictions, %d users, serving version %s, %d model loads",
                 result.model.name, result.model.version, result.rows, result.users, result.serving_version,
                 result.model_loads)
    return JobResult(result, {"model_name": result.model.name, "model_version": result.model.version,
                              "rows": result.rows, "users": result.users,
                              "serving_version": result.serving_version})
