"""Bulk inference: score the rows of a run date that the model spec's ``scoring:`` section declares,
write them to ``infer.table`` and load the serving store.

:func:`infer_for_date` is the body of ``jobs/infer.py``; the scoring spec is read by
:mod:`lakeloop.scoring` (docs/inference.md):

1. :func:`resolve_model` -- the registered model version holding ``@champion`` (or a given version),
   the URI of its artifacts, its flavours and the feature columns of its signature.
2. Rows: :func:`lakeloop.scoring.rows_to_score` -- a table, SQL, or the app's generator.
3. Features: the training set's features of every row as of the scoring time, computed by the code
   that built the training rows (:func:`lakeloop.featuresets.training.feature_rows`).
4. :func:`score` -- ``mapInArrow``: each Python worker loads the model once (module-level cache
   keyed by the artifact URI) and scores Arrow batches as numpy matrices; an xgboost model is
   scored with ``Booster.inplace_predict``, any other flavour through ``mlflow.pyfunc``.  A ``bigdl``
   model is scored by BigDL itself where BigDL is installed (the Spark 3.5 runtime, where
   ``spark-submit.sh`` sends such an ``infer``), otherwise by its numpy pyfunc.  ``score`` is the
   task's output: the positive-class probability (binary), the value (regression), the probability
   of the predicted class with the class in ``prediction`` (multiclass).  A table on disk that holds the
   features (``features: rows`` of ``rows: {table}``) is scored without the JVM instead: tasks read its files
   and write prediction files that the driver commits (:mod:`lakeloop.score_files`); the choice is logged.
5. The date's partition of ``infer.table`` is replaced; the serving frame
   (:func:`lakeloop.scoring.serving_frame`: a value per key, or per-key lists of the best rows) is
   loaded into the serving store as a new version and switched to only when every key arrived
   (:func:`lakeloop.serving.load_dataframe`).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop import scoring
from lakeloop.errors import LakeloopError
from lakeloop.infer_state import InferState
from lakeloop.job import JobResult
from lakeloop.lake import Lake
from lakeloop.scorer import (  # noqa: F401 - re-exported: infer's API
    ModelRef,
    check_scoring_rows,
    feature_matrix,
    load_scorer,
    output_fields,
    scored_batch,
    task_outputs,
    task_scorer,
)
from lakeloop.scoring import RANK, SCORE

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.scoring import ScoringSpec, ServingSpec
    from lakeloop.serving import ServingStore
    from lakeloop.session import RunContext

__all__ = ["ModelRef", "InferResult", "ModelNotFound", "TASKS", "resolve_model", "score", "load_scorer",
           "serving_version", "push_serving", "score_for_date", "infer_for_date",
           "check_scoring_rows"]

log = logging.getLogger(__name__)

TASKS = ("binary", "regression", "multiclass")


class ModelNotFound(LakeloopError):
    """The registry has no such model version (or no ``@champion`` yet)."""


@dataclass
class InferResult:
    """What one inference run produced."""

    model: ModelRef
    rows: int
    keys: int
    serving_version: str
    model_loads: int
    scoring_partitions: int
    table_version: int | None = None
    skipped: bool = False  # the date was scored from the same input before (lakeloop.infer_state)


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
    return model_ref(name, str(mv.version), uri)


def model_ref(name: str, version: str, artifact_uri: str) -> ModelRef:
    """A :class:`ModelRef` with the flavours and signature features read from the artifacts' ``MLmodel``.

    The file is read from the artifact store itself: no ``models:/`` resolution, so neither the tracking
    store nor the process-wide MLflow URIs are consulted (a serving thread and a job may point elsewhere).
    """
    from lakeloop.train.registry import model_info

    info = model_info(artifact_uri)
    features = tuple(info.signature.inputs.input_names()) if info.signature is not None else ()
    return ModelRef(name=name, version=version, artifact_uri=artifact_uri, flavors=tuple(info.flavors),
                    features=features)


@dataclass(frozen=True)
class _ScoreBatches:
    """The ``mapInArrow`` function; a module-level class so that workers use this module's cache."""

    ref: ModelRef
    features: tuple[str, ...]
    keep: tuple[str, ...]
    task: str = "binary"
    loads: Accumulator | None = None

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = task_scorer(self.ref, self.features, self.loads)
        for batch in batches:
            yield scored_batch(scorer, batch, self.features, self.keep, self.task)


def score(df: DataFrame, ref: ModelRef, features: Sequence[str], keep: Sequence[str],
          loads: Accumulator | None = None, task: str = "binary") -> DataFrame:
    """``keep`` columns of ``df`` plus the model's output for ``task``.

    ``score`` is the positive-class probability (binary), the predicted value (regression) or the
    probability of the predicted class (multiclass, whose class index is ``prediction``).  Features
    are cast to double before they leave the JVM.  ``loads`` (an integer accumulator) counts the
    model loads in the workers.  The Arrow batch size is
    ``spark.sql.execution.arrow.maxRecordsPerBatch`` when the frame is computed.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    missing = [c for c in (*keep, *features) if c not in df.columns]
    if missing:
        raise LakeloopError(f"scoring frame lacks columns {', '.join(missing)}")
    inputs = df.select(*keep, *[F.col(c).cast("double").alias(c) for c in features if c not in keep])
    if "bigdl" in ref.flavors and importlib.util.find_spec("bigdl") is not None:
        return _score_bigdl(inputs, ref, features, keep, loads)
    schema = StructType([*(inputs.schema[c] for c in keep), *output_fields(task)])
    return inputs.mapInArrow(_ScoreBatches(ref, tuple(features), tuple(keep), task, loads), schema)


def _score_bigdl(inputs: DataFrame, ref: ModelRef, features: Sequence[str], keep: Sequence[str],
                 loads: Accumulator | None) -> DataFrame:
    """A ``bigdl`` model in the Spark 3.5 runtime: scored by BigDL itself (:func:`lakeloop.train.bigdl.score_frame`)."""
    import mlflow.artifacts

    from lakeloop.train.bigdl import score_frame

    local = mlflow.artifacts.download_artifacts(artifact_uri=ref.artifact_uri)
    if loads is not None:
        loads.add(1)  # loaded once, on the driver; BigDL broadcasts it
    return score_frame(inputs, local, list(features), list(keep), SCORE)


# -- rows, features, outputs ---------------------------------------------------------------------------
def _features(ref: ModelRef, conf: Conf, frame: DataFrame) -> list[str]:
    """The model's signature columns, else the model spec's features as ``train`` chose them."""
    from lakeloop.train.dataset import feature_columns

    return list(ref.features) or feature_columns(conf, frame)


def _ranked(scored: DataFrame, serving: ServingSpec) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not serving.rank_by:
        return scored
    order = Window.partitionBy(serving.key).orderBy(*scoring.order_columns(serving))
    return scored.withColumn(RANK, F.row_number().over(order))


def serving_version(run_date: dt.date, model_version: str, run_id: str) -> str:
    """The serving version name of a run: ``<date>-v<model version>-<run id>``."""
    return f"{run_date.isoformat()}-v{model_version}-{run_id}"


def push_serving(store: ServingStore, frame: DataFrame, version: str, serving: ServingSpec) -> int:
    """Load ``frame`` (:func:`lakeloop.scoring.serving_frame`) as ``version`` and switch to it; returns the keys."""
    from lakeloop.serving import load_dataframe

    return load_dataframe(store, frame, version, serving.key, serving.value)


def run_columns(ref: ModelRef, run_id: str) -> dict[str, str]:
    """The string columns of every prediction of a run besides ``scored_at`` and ``dt``."""
    return {"model_name": ref.name, "model_version": ref.version, "run_id": run_id}


def _write_scored(spark: SparkSession, conf: Conf, spec: ScoringSpec, run_date: dt.date, run_id: str,
                  ref: ModelRef, loads: Accumulator, features: tuple[Any, Any, Any], seen: list[str]) -> int | None:
    """Score the date's rows and replace its ``infer.table`` partition; returns the table version.  ``features``
    is :func:`lakeloop.scoring.feature_inputs`; the tables read are appended to ``seen``.

    A table on disk (``features: rows`` of a ``rows: {table}``) is scored from its files by the tasks
    (:mod:`lakeloop.score_files`); any other frame through ``mapInArrow``.  The choice is logged with its reason.
    """
    from lakeloop import score_files

    day, (training, sets, inputs) = run_date.isoformat(), features
    seen += list(inputs.bounds.ranges)
    try:
        rows = scoring.rows_to_score(spark, conf, spec, run_date, seen)
        source, why = score_files.table_source(conf, spec, ref, run_date)
        if spec.stored_features:
            model_features = _features(ref, conf, rows)
            frame, keep = rows, [c for c in rows.columns if c not in model_features]
        else:
            frame = scoring.feature_frame(rows, training, sets, inputs, scoring.scoring_time(spec, run_date))
            model_features, keep = None, rows.columns
        if source is not None:
            log.info("%s dt=%s: scoring on the file path (tasks read the table's files): %s", conf["infer.table"],
                     day, why)
            return score_files.write_scored(spark, conf, spec, run_date, ref, loads, source, model_features, keep,
                                            run_columns(ref, run_id)).version
        log.info("%s dt=%s: scoring through mapInArrow: %s", conf["infer.table"], day, why)
        return _write_in_jvm(spark, conf, spec, run_date, run_id, ref, loads, frame, keep, model_features)
    finally:
        inputs.close()


def _write_in_jvm(spark: SparkSession, conf: Conf, spec: ScoringSpec, run_date: dt.date, run_id: str,
                  ref: ModelRef, loads: Accumulator, frame: DataFrame, keep: list[str],
                  features: list[str] | None) -> int | None:
    """Score ``frame`` with :func:`score` (``mapInArrow``) and replace the date's partition of ``infer.table``."""
    from pyspark.sql import functions as F

    day, lake = run_date.isoformat(), Lake.from_conf(conf)
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    batch_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(batch_key)
    try:
        # an explicit count is kept by adaptive execution: the scoring tasks spread over the cores,
        # and each key's rows stay in one partition for the ranking
        by_key = [spec.serving.key] if spec.serving.rank_by else []
        frame = frame.repartition(partitions, *by_key).persist()
        check_scoring_rows(frame.count(), conf["infer.min_rows"], f"{conf['infer.table']} dt={day}")
        features = features if features is not None else _features(ref, conf, frame)
        scored = score(frame, ref, features, keep, loads, conf["train.task"])
        scoring.check_serving(spec, scored.columns)  # before the write: a bad spec changes nothing
        scored = _ranked(scored, spec.serving)
        for name, value in run_columns(ref, run_id).items():
            scored = scored.withColumn(name, F.lit(value))
        scored = scored.withColumn("scored_at", F.current_timestamp()).withColumn("dt", F.lit(day))
        spark.conf.set(batch_key, str(conf["infer.batch_size"]))
        written = lake.write(scored, lake.uri(conf["infer.table"]), mode="overwrite", partition_by=["dt"],
                             replace_where=f"dt = '{day}'")
    finally:
        spark.conf.set(batch_key, previous)
        frame.unpersist()
    return written.version


def _identity(conf: Conf, spec: ScoringSpec, ref: ModelRef, training: Any, sets: Any) -> list[Any]:
    """What a run's output depends on besides its input tables: the model, the specs and the settings."""
    from lakeloop.conf import SPEC

    return [ref.name, ref.version, ref.artifact_uri, repr(spec), repr(training),
            [repr(sets[j.set]) for j in training.joins] if training is not None else [], conf["train.task"],
            {k: conf.get(k) for k in SPEC if k.startswith("infer.")}]


def score_for_date(spark: SparkSession, conf: Conf, spec: ScoringSpec, run_date: dt.date, run_id: str,
                   ref: ModelRef, *, force: bool = False) -> InferResult:
    """Score ``run_date`` with ``ref`` as ``spec`` declares, replace its ``infer.table`` partition, load serving.

    ``conf`` is a model's conf (:func:`lakeloop.train.spec.model_conf`): ``train.task``, ``infer.*``.
    Fewer rows to score than ``infer.min_rows`` is a :class:`~lakeloop.errors.DataQualityError`
    before anything is written.  A date scored before from the same input, whose partition and serving
    version are still that run's, is skipped before any data is read (:mod:`lakeloop.infer_state`) unless
    ``force``.
    """
    from lakeloop.serving import open_store

    lake, store = Lake.from_conf(conf), open_store(conf)
    features = scoring.feature_inputs(spark, conf, spec, run_date)  # specs loaded; its reader reads lazily
    state, identity = InferState(conf, ref.name, run_date), _identity(conf, spec, ref, *features[:2])
    done = None if force else state.done_before(identity, store.current_version())
    if done is not None:
        features[2].close()
        log.info("%s dt=%s: scored from the same input by serving version %s; skipped", ref.name,
                 run_date.isoformat(), done["serving_version"])
        return InferResult(model=ref, **{**done, "model_loads": 0}, skipped=True)
    loads, seen = spark.sparkContext.accumulator(0), []
    table_version = _write_scored(spark, conf, spec, run_date, run_id, ref, loads, features, seen)
    predictions = lake.read(spark, lake.uri(conf["infer.table"]), where=f"dt = '{run_date.isoformat()}'")
    rows = predictions.count()
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    version = serving_version(run_date, ref.version, run_id)
    frame = scoring.serving_frame(predictions, spec.serving, conf["infer.top_n"], partitions)
    keys = push_serving(store, frame, version, spec.serving)
    log.info("%d predictions for %d keys; serving version %s", rows, keys, version)
    result = InferResult(model=ref, rows=rows, keys=keys, serving_version=version, model_loads=loads.value,
                         scoring_partitions=partitions, table_version=table_version)
    state.record(identity, seen, version, {k: getattr(result, k) for k in (
        "rows", "keys", "serving_version", "model_loads", "scoring_partitions", "table_version")})
    return result


def infer_for_date(spark: SparkSession, conf: Conf, run_date: dt.date, run_id: str, *,
                   model_version: str | int | None = None, model: str | None = None,
                   force: bool = False) -> InferResult:
    """:func:`score_for_date` with model spec ``model`` (default: the app's model) and its registered version.

    The spec (:func:`lakeloop.train.spec.model_conf`) gives the registered name, the task and the
    scoring section; a spec without ``scoring.rows`` / ``scoring.serving`` is a ConfError (exit 2).
    """
    from lakeloop.train.spec import model_conf

    conf = model_conf(conf, model)
    spec = scoring.required(conf.scoring, f"model {conf['mlflow.model_name']} (train.* keys)")
    ref = resolve_model(conf, model_version)
    log.info("scoring with %s version %s (%s)", ref.name, ref.version, ", ".join(ref.flavors))
    return score_for_date(spark, conf, spec, run_date, run_id, ref, force=force)


DESCRIPTION = "bulk scoring of --date's rows (the model spec's scoring section) -> infer.table + serving store"


def add_arguments(parser) -> None:
    """``--model-version N`` (default: the ``@champion`` alias)."""
    parser.add_argument("--model-version", default=None, metavar="N",
                        help="registered model version to use (default: the @champion alias)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="model spec conf/models/NAME.yaml (default: train.model, or the only spec)")
    parser.add_argument("--force", action="store_true",
                        help="score again a date already scored from the same input")


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[InferResult]:
    """The ``infer`` job: score, replace the date's predictions, switch the serving store."""
    result = infer_for_date(spark, ctx.conf, ctx.run_date, ctx.run_id, model_version=args.model_version,
                            model=getattr(args, "model", None), force=getattr(args, "force", False))
    ctx.log.info("model %s version %s: %d predictions, %d keys, serving version %s, %d model loads",
                 result.model.name, result.model.version, result.rows, result.keys, result.serving_version,
                 result.model_loads)
    # "users": the run report's chart of infer runs reads the served keys under that name
    return JobResult(result, {"model_name": result.model.name, "model_version": result.model.version,
                              "rows": result.rows, "users": result.keys, "keys": result.keys,
                              "serving_version": result.serving_version,
                              **({"skipped": True} if result.skipped else {})})
