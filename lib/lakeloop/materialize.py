"""The ``materialize`` job: feature sets' rows of a run date into the serving store, one key per entity.

    ./spark-submit.sh materialize --date 2026-11-22                      # the sets online models use
    ./spark-submit.sh materialize --date 2026-11-22 --feature-set user_activity

Each set's rows of the run date, as ``features`` writes them to its gold table (the gold partition itself when
the set is written to gold, else computed by the same code), are loaded into the
namespace ``<serving.namespace>.features.<set>`` (:func:`lakeloop.online.feature_namespace`): the key is the
entity (:func:`lakeloop.online.entity_key`), the value the set's features as one JSON object.  The load is
the serving store's usual one (:func:`lakeloop.serving.load_dataframe`): written from the executors,
partition by partition, into a new version ``<date>-<run id>`` that becomes current in one atomic switch once
every key is in; nothing is collected to the driver, and a failed load leaves the served version as it was.
With ``--incremental`` the new version starts as a copy of the one served (made inside the store) and the
executors write only the entities whose features changed; when an entity of the served version has no row any
more, the count check refuses that version and it is loaded in full instead, so both give the same version.
The version also holds, under :data:`lakeloop.online.ABSENT_KEY`, the features an entity the set has no row
for gets when the set is joined (the defaults, and the derived features over them: computed by the same Spark
code, :func:`lakeloop.featuresets.compute.absent_row`).  A set with no row for the date is a data-quality
error (exit 3) that loads nothing.

Without ``--feature-set`` the job materializes the sets joined by the training sets of the models in
``serve.online.models`` (:mod:`lakeloop.online`), which ``POST /v1/score/<model>`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from lakeloop.errors import DataQualityError
from lakeloop.job import JobResult
from lakeloop.online import ABSENT_KEY, KEY_SEPARATOR, feature_namespace

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.featuresets.spec import FeatureSet
    from lakeloop.lake import Lake
    from lakeloop.serving import LoadCounts, ServingStore
    from lakeloop.session import RunContext

__all__ = ["DESCRIPTION", "add_arguments", "run", "materialize", "materialize_set", "set_rows", "feature_store",
           "online_sets", "entity_frame", "set_frame"]

DESCRIPTION = "feature sets' rows of --date -> the serving store per entity (new version, atomic switch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--feature-set NAME`` (repeatable; default: the sets the ``serve.online.models`` use)."""
    parser.add_argument("--feature-set", dest="feature_sets", action="append", default=None, metavar="NAME",
                        help="a feature set to materialize (repeatable; default: every set joined by the "
                             "training sets of serve.online.models)")
    parser.add_argument("--incremental", action="store_true",
                        help="start from the version being served and write only the entities whose features "
                             "changed (a full load when an entity has no row any more)")


def feature_store(conf: Conf, set_name: str) -> ServingStore:
    """The serving store holding feature set ``set_name``'s materialized rows."""
    from lakeloop.serving import settings_from_conf, store_from_config

    settings = settings_from_conf(conf)
    return store_from_config(dataclasses.replace(settings, namespace=feature_namespace(settings.namespace, set_name)))


def online_sets(conf: Conf) -> list[str]:
    """The feature sets joined by the online models' training sets, in first-use order."""
    from lakeloop.online import online_spec

    names: list[str] = []
    for model in conf["serve.online.models"]:
        names += [j.set for j in online_spec(conf, model).joins if j.set not in names]
    return names


def entity_frame(df: DataFrame, fs: FeatureSet) -> DataFrame:
    """``(key, features)``: the entity key as :func:`lakeloop.online.entity_key` writes it (null when an entity
    column is null, which the load refuses), the features as one struct."""
    from pyspark.sql import functions as F

    parts = [F.col(c).cast("string") for c in fs.entity]
    any_null = F.greatest(*[F.col(c).isNull() for c in fs.entity]) if len(parts) > 1 else F.col(fs.entity[0]).isNull()
    key = F.when(~any_null, F.concat_ws(KEY_SEPARATOR, *parts))
    return df.select(key.alias("key"), F.struct(*[F.col(f.name) for f in fs.features]).alias("features"))


def set_rows(spark: SparkSession, lake: Lake, fs: FeatureSet, read: Any, run_date: dt.date) -> DataFrame:
    """``fs``'s rows of ``run_date``: its gold partition when the set is written to gold (``materialize: true``),
    else computed by the code that writes gold tables (:func:`lakeloop.featuresets.build.feature_frame`)."""
    from lakeloop.featuresets.build import feature_frame

    if not fs.materialize:
        return feature_frame(fs, read, run_date)
    if not lake.exists(fs.table):
        raise DataQualityError(f"{fs.name}: no table {fs.table} at {lake.uri(fs.table)}; run features first")
    return lake.read(spark, fs.table, where=f"dt = '{run_date.isoformat()}'")


def materialize_set(spark: SparkSession, conf: Conf, fs: FeatureSet, rows: DataFrame, run_date: dt.date,
                    version: str, incremental: bool = False) -> LoadCounts:
    """Load ``rows`` (:func:`set_rows`) as ``version`` of ``fs``'s namespace and switch to it.

    ``incremental``: the version starts as a copy of the one being served and only the entities whose features
    differ from it are written (:func:`lakeloop.serving.load_changes`); the result is the same version a full
    load writes.
    """
    from lakeloop.serving import load_changes

    if rows.limit(1).count() == 0:  # before the load: an empty version must never become current
        origin = fs.table if fs.materialize else fs.source
        raise DataQualityError(f"{fs.name}: no row for dt={run_date.isoformat()} (from {origin}); run the jobs "
                               "that write it first (nothing was loaded)")
    store = feature_store(conf, fs.name)
    base = store.current_version() if incremental else None
    return load_changes(store, set_frame(fs, rows), version, "key", "features", base=base)


def set_frame(fs: FeatureSet, rows: DataFrame) -> DataFrame:
    """``(key, features)`` of a version of ``fs``: :func:`entity_frame` of ``rows``, and under
    :data:`lakeloop.online.ABSENT_KEY` what an entity without a row gets."""
    from pyspark.sql import functions as F

    from lakeloop.featuresets.compute import absent_row

    absent = entity_frame(absent_row(fs, rows), fs).withColumn("key", F.lit(ABSENT_KEY))
    return entity_frame(rows, fs).unionByName(absent)


def materialize(spark: SparkSession, conf: Conf, run_date: dt.date, run_id: str,
                names: list[str] | None = None, incremental: bool = False) -> dict[str, dict[str, Any]]:
    """Materialize ``names`` (default :func:`online_sets`) for ``run_date``: ``{set: {keys, written, copied,
    incremental, version, namespace}}`` (:func:`materialize_set`).

    The sets that are not written to gold read their sources through one reader, each table once.
    """
    from lakeloop.conf import ConfError
    from lakeloop.featuresets import load_specs
    from lakeloop.featuresets.build import Inputs, plan_bounds
    from lakeloop.lake import Lake

    sets = load_specs(conf).sets
    names = names or online_sets(conf)
    if not names:
        raise ConfError("materialize: no feature set given (--feature-set) and serve.online.models is empty")
    unknown = [n for n in names if n not in sets]
    if unknown:
        raise ConfError(f"materialize: unknown feature set {unknown[0]!r} (declared: {', '.join(sorted(sets))})")
    lake, version = Lake.from_conf(conf), f"{run_date.isoformat()}-{run_id}"
    computed = [sets[n] for n in names if not sets[n].materialize]
    inputs = Inputs(spark, lake, plan_bounds(computed, [], sets, run_date))
    done = {}
    try:
        for name in names:
            rows = set_rows(spark, lake, sets[name], inputs, run_date)
            counts = materialize_set(spark, conf, sets[name], rows, run_date, version, incremental)
            done[name] = {**dataclasses.asdict(counts), "version": version,
                          "namespace": feature_namespace(conf["serving.namespace"], name)}
    finally:
        inputs.close()
    return done


def run(ctx: RunContext, spark: SparkSession, args: argparse.Namespace) -> JobResult[dict[str, dict[str, Any]]]:
    """The ``materialize`` job (module docstring)."""
    done = materialize(spark, ctx.conf, ctx.run_date, ctx.run_id, args.feature_sets, args.incremental)
    for name, d in done.items():
        how = (f"{d['written']} changed, {d['copied']} copied from the version served before" if d["incremental"]
               else "all written")
        ctx.log.info("%s: %d entities (%s) -> %s version %s", name, d["keys"], how, d["namespace"], d["version"])
    return JobResult(done, {"sets": {n: d["keys"] for n, d in done.items()}, "version": next(iter(done.values()))
                            ["version"]})
