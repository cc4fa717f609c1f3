"""Scoring specs: what bulk inference scores, with which features, and what it serves.

The ``scoring:`` section of a model spec (``conf/models/<name>.yaml``, parsed with the rest of the spec
by :mod:`lakeloop.train.spec`)::

    scoring:
      rows: {generator: "package.module:function"}   # or {table: gold.x} or {sql: "select ..."}
      as_of: end_of_day          # the features' time for every row: start_of_day or end_of_day of the run date
      features: training_set     # or rows: the rows table holds the model's features already
      training_set: NAME         # whose features (default: the training set writing train.table)
      min_rows: 1                # -> infer.min_rows
      table: gold.predictions    # -> infer.table
      serving:
        key: <column>            # the serving key
        value: <name>            # the value's name (see below)
        rank_by: [score desc, <column>]   # optional: per key, a list of the best rows
        top_n: 10                # -> infer.top_n: rows per list
        fields: [<column>, score]         # the fields of each list entry (or of the value)

Rows to score (:func:`rows_to_score`) are entity key columns:

``table``
    The run date's partition (``dt``) of a lake table, or the whole table when it has no ``dt``.
``sql``
    A Spark SQL query; ``layer.name`` in it reads that lake table (every partition: filter on
    ``dt = '${run_date}'``), ``${run_date}`` is the run date (``YYYY-MM-DD``).
``generator``
    ``package.module:function(spark, conf, run_date, read) -> DataFrame``, where ``read(name)`` is the
    run date's partition of a lake table as for ``table`` (the recommender's candidate pairs:
    :mod:`lakeloop_apps.recommender.candidates`).

Their features are the training set's, computed by the same code (:func:`lakeloop.featuresets.training.feature_rows`)
as of ``as_of``; with ``features: rows`` the rows themselves hold the model's feature columns (a gold table or
a materialized scoring frame) and are scored as they are stored (no joins, duplicates kept).

Serving: without ``rank_by`` each scored row is one key, its value the ``fields`` as a mapping, or the column
named by ``value`` (``score``, ``prediction`` or a row column) when ``fields`` is absent; with ``rank_by`` the
rows are ranked per key (``rank``, 1 = best, written to the table) and the value ``value`` is the list of the
``top_n`` best rows' ``fields``, best first.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.conf import ConfError
from lakeloop.errors import DataQualityError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.featuresets.compute import Reader
    from lakeloop.lake import Lake

__all__ = ["ROWS", "AS_OF", "SCORE", "PREDICTION", "RANK", "RowsSpec", "ServingSpec", "ScoringSpec", "parse_scoring",
           "required", "scoring_time", "rows_to_score", "training_spec", "feature_inputs", "feature_frame",
           "order_columns", "check_serving", "serving_frame"]

ROWS = ("table", "sql", "generator")
AS_OF = ("end_of_day", "start_of_day")
#: where the features of the rows come from: the training set's joins, or the rows' own columns
FEATURES = ("training_set", "rows")
SCORE, PREDICTION, RANK = "score", "prediction", "rank"
#: scoring keys that set a conf key (the rest are read from :class:`ScoringSpec`)
CONF_KEYS = {"min_rows": "infer.min_rows", "table": "infer.table", "serving.top_n": "infer.top_n"}
_KEYS = ("rows", "as_of", "features", "training_set", "min_rows", "table", "serving")
_SERVING_KEYS = ("key", "value", "rank_by", "top_n", "fields")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE = re.compile(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+")
_PLUGIN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_SQL_TABLE = re.compile(r"(?<![\w.`])(bronze|silver|gold)\.([A-Za-z_]\w*)\b")
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class RowsSpec:
    """Which rows to score: ``kind`` (one of :data:`ROWS`) and its table, query or ``module:function``."""

    kind: str
    value: str


@dataclass(frozen=True)
class ServingSpec:
    """The serving key and value; ``rank_by`` (column, descending) pairs make per-key lists."""

    key: str
    value: str
    rank_by: tuple[tuple[str, bool], ...] = ()
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoringSpec:
    """A model spec's ``scoring:`` section (``origin``: its file)."""

    origin: str
    rows: RowsSpec | None
    serving: ServingSpec | None
    as_of: str = "end_of_day"
    training_set: str | None = None
    features: str = "training_set"  # one of FEATURES

    @property
    def stored_features(self) -> bool:
        """Whether the rows hold the model's features themselves (``features: rows``)."""
        return self.features == "rows"


# -- parsing ----------------------------------------------------------------------------------------------
def _error(origin: str, key: str, message: str) -> ConfError:
    return ConfError(f"{origin}: scoring.{key}: {message}")


def _mapping(value: Any, origin: str, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _error(origin, key, f"expected a mapping of {', '.join(allowed)}, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise _error(origin, f"{key}.{unknown[0]}" if key else unknown[0],
                     f"unknown key: expected one of {', '.join(allowed)}")
    return value


def _name(value: Any, origin: str, key: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise _error(origin, key, f"expected a column name, got {value!r}")
    return value


def _rows(value: Any, origin: str) -> RowsSpec:
    tree = _mapping(value, origin, "rows", ROWS)
    if len(tree) != 1:
        raise _error(origin, "rows", f"expected exactly one of {', '.join(ROWS)}, got {sorted(tree) or 'none'}")
    ((kind, text),) = tree.items()
    patterns = {"table": (_TABLE, "layer.name, e.g. gold.x"), "generator": (_PLUGIN, "package.module:function"),
                "sql": (re.compile(r"(?s).*\S.*"), "a Spark SQL query")}
    pattern, wanted = patterns[kind]
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise _error(origin, f"rows.{kind}", f"expected {wanted}, got {text!r}")
    return RowsSpec(kind, text)


def _rank_by(value: Any, origin: str) -> tuple[tuple[str, bool], ...]:
    if not isinstance(value, list) or not value:
        raise _error(origin, "serving.rank_by", f"expected a non-empty list of 'column [asc|desc]', got {value!r}")
    out = []
    for i, item in enumerate(value):
        parts = item.split() if isinstance(item, str) else []
        if not 1 <= len(parts) <= 2 or not _NAME.fullmatch(parts[0]) or parts[1:] not in ([], ["asc"], ["desc"]):
            raise _error(origin, f"serving.rank_by[{i}]", f"expected 'column', 'column asc' or 'column desc', "
                                                          f"got {item!r}")
        out.append((parts[0], parts[1:] == ["desc"]))
    return tuple(out)


def _serving(value: Any, origin: str) -> ServingSpec:
    tree = _mapping(value, origin, "serving", _SERVING_KEYS)
    for required_key in ("key", "value"):
        if required_key not in tree:
            raise _error(origin, f"serving.{required_key}", "a value is required")
    fields = tree.get("fields", [])
    if not isinstance(fields, list):
        raise _error(origin, "serving.fields", f"expected a list of column names, got {fields!r}")
    rank_by = _rank_by(tree["rank_by"], origin) if "rank_by" in tree else ()
    if rank_by and not fields:
        raise _error(origin, "serving.fields", "per-key lists (rank_by) need the fields of each entry")
    return ServingSpec(key=_name(tree["key"], origin, "serving.key"),
                       value=_name(tree["value"], origin, "serving.value"), rank_by=rank_by,
                       fields=tuple(_name(f, origin, f"serving.fields[{i}]") for i, f in enumerate(fields)))


def parse_scoring(value: Any, origin: str) -> tuple[ScoringSpec, dict[str, Any]]:
    """The ``scoring:`` section: the spec and ``{spec key under scoring: value}`` of the keys that set conf keys.

    Raises :class:`~lakeloop.conf.ConfError` naming ``origin``, the key and what is allowed.
    """
    tree = _mapping(value, origin, "", _KEYS)
    as_of = tree.get("as_of", "end_of_day")
    if as_of not in AS_OF:
        raise _error(origin, "as_of", f"expected one of {', '.join(AS_OF)}, got {as_of!r}")
    training_set = tree.get("training_set")
    if training_set is not None:
        _name(training_set, origin, "training_set")
    features = tree.get("features", "training_set")
    if features not in FEATURES:
        raise _error(origin, "features", f"expected one of {', '.join(FEATURES)}, got {features!r}")
    serving = _serving(tree["serving"], origin) if "serving" in tree else None
    spec = ScoringSpec(origin=origin, rows=_rows(tree["rows"], origin) if "rows" in tree else None,
                       serving=serving, as_of=as_of, training_set=training_set, features=features)
    values = {k: tree[k] for k in ("min_rows", "table") if k in tree}
    if isinstance(tree.get("serving"), dict) and "top_n" in tree["serving"]:
        values["serving.top_n"] = tree["serving"]["top_n"]
    return spec, values


def required(spec: ScoringSpec | None, origin: str) -> ScoringSpec:
    """``spec`` with its rows and serving declared and its generator importable, else a ConfError.

    What ``infer`` checks before any Spark work (``origin`` names the conf when there is no spec).
    """
    for key in ("rows", "serving"):
        if spec is None or getattr(spec, key) is None:
            where = spec.origin if spec is not None else origin
            raise ConfError(f"{where}: scoring.{key}: required to run infer (see docs/inference.md, scoring specs)")
    if spec.rows.kind == "generator":
        _plugin(spec)
    return spec


# -- rows ---------------------------------------------------------------------------------------------------
def scoring_time(spec: ScoringSpec, run_date: dt.date) -> dt.datetime:
    """The features' as-of time: the start or the end of ``run_date`` (UTC)."""
    from lakeloop.featuresets.scope import day_start

    return day_start(run_date) + (_DAY if spec.as_of == "end_of_day" else dt.timedelta(0))


def _require_table(lake: Lake, name: str) -> None:
    if not lake.exists(name):
        raise DataQualityError(f"{name}: no table at {lake.uri(name)}; run the jobs that write it first")


def run_date_reader(spark: SparkSession, lake: Lake, run_date: dt.date, seen: list[str] | None = None) -> Reader:
    """``read(name)``: the ``dt = run_date`` partition of a lake table, or the whole table when it has no ``dt``
    (each table read is appended to ``seen``)."""

    def read(name: str) -> DataFrame:
        _require_table(lake, name)
        if seen is not None:
            seen.append(name)
        frame = lake.read(spark, name)
        return frame.where(f"dt = '{run_date.isoformat()}'") if "dt" in frame.columns else frame

    return read


def _sql_rows(spark: SparkSession, lake: Lake, query: str, run_date: dt.date, seen: list[str]) -> DataFrame:
    def view(match: re.Match) -> str:
        name = f"{match.group(1)}.{match.group(2)}"
        _require_table(lake, name)
        seen.append(name)
        alias = f"_lakeloop_{match.group(1)}_{match.group(2)}"
        lake.read(spark, name).createOrReplaceTempView(alias)
        return alias

    return spark.sql(_SQL_TABLE.sub(view, query.replace("${run_date}", run_date.isoformat())))


def _plugin(spec: ScoringSpec) -> Callable[..., DataFrame]:
    module, _, function = spec.rows.value.partition(":")
    try:
        found = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise ConfError(f"{spec.origin}: scoring.rows.generator: {spec.rows.value!r}: {exc}") from None
    if not callable(found):
        raise ConfError(f"{spec.origin}: scoring.rows.generator: {spec.rows.value!r} is not a function")
    return found


def rows_to_score(spark: SparkSession, conf: Conf, spec: ScoringSpec, run_date: dt.date,
                  seen: list[str] | None = None) -> DataFrame:
    """The entity rows of ``run_date`` to score (see the module docstring), duplicates removed unless the rows hold
    their features (``features: rows``: scored as stored); the tables they come from are appended to ``seen`` (a
    generator's: those it reads through ``read``)."""
    from lakeloop.lake import Lake

    lake, seen = Lake.from_conf(conf), seen if seen is not None else []
    if spec.rows.kind == "table":
        rows = run_date_reader(spark, lake, run_date, seen)(spec.rows.value).drop("dt")
    elif spec.rows.kind == "sql":
        rows = _sql_rows(spark, lake, spec.rows.value, run_date, seen)
    else:
        rows = _plugin(spec)(spark, conf, run_date, run_date_reader(spark, lake, run_date, seen))
    taken = [c for c in rows.columns if c in (SCORE, PREDICTION, RANK)]
    if taken:
        raise ConfError(f"{spec.origin}: scoring.rows: the rows have a column {taken[0]!r}, which the scores use")
    return rows if spec.stored_features else rows.distinct()


# -- features -----------------------------------------------------------------------------------------------
def training_spec(conf: Conf, spec: ScoringSpec, specs: Any) -> Any:
    """The training set whose features the model scores: ``scoring.training_set``, else the one writing
    ``train.table``; ConfError names the choices."""
    if spec.training_set is not None:
        if spec.training_set not in specs.training:
            raise ConfError(f"{spec.origin}: scoring.training_set: {spec.training_set!r}: expected one of "
                            f"{', '.join(sorted(specs.training)) or 'no training sets declared'}")
        return specs.training[spec.training_set]
    found = next((t for t in specs.training.values() if t.table == conf["train.table"]), None)
    if found is None:
        raise ConfError(f"{spec.origin}: scoring.training_set: no training set writes {conf['train.table']} "
                        "(table); name the one whose features the model uses")
    return found


def feature_inputs(spark: SparkSession, conf: Conf, spec: ScoringSpec, run_date: dt.date) -> tuple[Any, Any, Any]:
    """(training-set spec, feature sets, reader) for the features of ``run_date``'s rows.

    The reader reads every source table once (the ``dt`` partitions the features' windows need),
    persisted until its ``close()``.  With ``features: rows`` there is no training set (None, no sets and a
    reader of nothing).
    """
    from lakeloop.featuresets import load_specs
    from lakeloop.featuresets.build import Bounds, Inputs, _add_set
    from lakeloop.lake import Lake

    if spec.stored_features:
        return None, {}, Inputs(spark, Lake.from_conf(conf), Bounds())
    specs = load_specs(conf)
    training = training_spec(conf, spec, specs)
    t, bounds = scoring_time(spec, run_date), Bounds()
    for join in training.joins:
        _add_set(bounds, specs.sets[join.set], t, t)
    return training, specs.sets, Inputs(spark, Lake.from_conf(conf), bounds)


def feature_frame(rows: DataFrame, training: Any, sets: Mapping[str, Any], read: Reader,
                  t: dt.datetime) -> DataFrame:
    """``rows`` with the training set's features as of ``t`` (:func:`lakeloop.featuresets.training.feature_rows`)."""
    from lakeloop.featuresets.training import feature_rows

    return feature_rows(training, sets, read, rows, t)


# -- serving ------------------------------------------------------------------------------------------------
def order_columns(serving: ServingSpec) -> list[Column]:
    """``rank_by`` as sort columns."""
    from pyspark.sql import functions as F

    return [F.col(c).desc() if desc else F.col(c).asc() for c, desc in serving.rank_by]


def check_serving(spec: ScoringSpec, columns: list[str]) -> None:
    """ConfError when the serving key, ranking, fields or value name a column the scored rows lack."""
    serving = spec.serving
    plain = () if serving.fields else (serving.value,)
    wanted = (serving.key, *(c for c, _ in serving.rank_by), *serving.fields, *plain)
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ConfError(f"{spec.origin}: scoring.serving: the predictions have no column {missing[0]!r} "
                        f"(columns: {', '.join(columns)})")


def serving_frame(predictions: DataFrame, serving: ServingSpec, top_n: int, partitions: int) -> DataFrame:
    """``(key, value)`` to load: one row per key (see the module docstring; :func:`check_serving` first)."""
    from pyspark.sql import functions as F
    entry = F.struct(*[F.col(c) for c in serving.fields]) if serving.fields else None
    if not serving.rank_by:
        value = entry if entry is not None else F.col(serving.value)
        return predictions.select(serving.key, value.alias(serving.value))
    ranked = F.struct(F.col(RANK), *[F.col(c) for c in serving.fields])
    lists = (predictions.where(F.col(RANK) <= top_n).repartition(partitions, serving.key).groupBy(serving.key)
             .agg(F.array_sort(F.collect_list(ranked)).alias("_top")))
    return lists.select(serving.key, F.transform("_top", lambda x: F.struct(*[x[c].alias(c) for c in serving.fields]))
                        .alias(serving.value))
