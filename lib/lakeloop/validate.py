"""Column statistics of table partitions, stored per run, and a drift (PSI) gate against a reference.

:func:`profile_groups` profiles every ``dt`` partition of a range in the same Spark passes over it:

1. one ``groupBy(dt)`` aggregation: row count, nulls, NaNs, approximate distinct count, min/max/mean/std
   and quantiles of numeric and temporal columns (the quantiles give each partition its own bin edges);
2. one ``groupBy(dt, column, bin or value)`` count over the exploded rows, each numeric value put in its
   partition's own bin and in its reference's bin (per-partition edges joined from a broadcast table),
   each string value counted; from it the histogram, the ``top_k`` most frequent values, and the counts
   of the reference's bins and top values (the inputs of the PSI) are collected.

A range run (``--from/--to``) therefore costs two passes over the range's partitions, plus two over the
reference windows with ``reference: window`` (each row of a partition goes to the pools of the dates it
precedes), instead of that per date.  :func:`profile` is the same for one frame.

Profiles are stored in the Delta table ``<warehouse>/_state/column_stats`` (one row per table, run
date, run id and column; partitioned by ``table_name`` and ``dt``; a re-run for the same date
replaces its rows).  The baseline of a run is the latest stored run of the same table with an
earlier ``dt``.

Population stability index, with fractions floored at ``1e-4`` so empty bins stay finite::

    PSI = sum_i (actual_i - expected_i) * ln(actual_i / expected_i)

Numeric columns use the baseline's quantile bins ``(-inf, e1], (e1, e2], ..., (ek, inf)``; string
columns use the baseline's top values plus one "other" bin; both add one bin for missing values
(null or NaN), so a jump in nulls is drift too.  Temporal columns are profiled but not compared:
their range moves with the run date by design.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloop.conf import ConfError
from lakeloop.errors import DataQualityError
from lakeloop.job import JobResult, add_range_arguments, per_date_summary, run_dates
from lakeloop.lake import Lake
from lakeloop.reports import Documents

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Row, SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["STATS_TABLE", "STATS_SCHEMA", "REPORT_QUANTILES", "ColumnProfile", "Finding", "TableValidation",
           "psi", "profile", "default_columns", "compare", "drift_report", "stats_frame", "profiles_from_rows",
           "load_baseline", "validate_table", "run_validate"]

STATS_TABLE = "_state.column_stats"
PSI_FLOOR = 1e-4
REPORT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NUMERIC, TEMPORAL, CATEGORICAL, OTHER = "numeric", "temporal", "categorical", "other"
_GROUP, _WHOLE, _POOL = "_g", "_whole", "_pool"

STATS_SCHEMA = (
    "table_name string, dt string, run_id string, computed_at timestamp, column_name string, data_type string, "
    "kind string, row_count long, nulls long, nans long, distinct_approx long, min double, max double, "
    "mean double, std double, quantiles array<struct<p: double, value: double>>, bin_edges array<double>, "
    "bin_counts array<long>, top_values array<struct<value: string, count: long>>, psi double, "
    "psi_threshold double, baseline_dt string, baseline_run_id string, passed boolean")


@dataclass
class ColumnProfile:
    """Statistics of one column in one run.

    ``bin_counts`` has ``len(bin_edges) + 1`` entries (numeric and temporal columns);
    ``top_values`` lists ``(value, count)`` most frequent first (string columns).
    """

    column: str
    data_type: str
    kind: str
    count: int
    nulls: int
    nans: int = 0
    distinct: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[tuple[float, float]] = field(default_factory=list)
    bin_edges: list[float] = field(default_factory=list)
    bin_counts: list[int] = field(default_factory=list)
    top_values: list[tuple[str, int]] = field(default_factory=list)
    psi: float | None = None
    # the bins that moved most against the reference: (bin, reference share, current share), largest first
    shifted: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.nulls + self.nans

    @property
    def present(self) -> int:
        return self.count - self.missing

    def distribution(self) -> list[int] | None:
        """Counts in this profile's own bins (+ other for strings) + missing; None if not comparable."""
        if self.kind == NUMERIC and self.bin_counts:
            return [*self.bin_counts, self.missing]
        if self.kind == CATEGORICAL:
            top = [c for _, c in self.top_values]
            return [*top, self.present - sum(top), self.missing]
        return None


@dataclass(frozen=True)
class Finding:
    """A column whose PSI exceeds its threshold."""

    table: str
    column: str
    kind: str
    psi: float
    threshold: float


@dataclass
class TableValidation:
    """Outcome of validating one table partition."""

    table: str
    dt: str
    run_id: str
    profiles: list[ColumnProfile]
    baseline_dt: str | None = None
    baseline_run_id: str | None = None
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warned: list[Finding] = field(default_factory=list)  # drifted columns whose policy is warn
    warnings: list[str] = field(default_factory=list)
    unchecked: dict[str, str] = field(default_factory=dict)  # column -> why its PSI means nothing
    skipped: bool = False  # same input as the run that computed it: the stored outcome, nothing recomputed

    @property
    def passed(self) -> bool:
        return not self.findings and not self.problems


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = PSI_FLOOR) -> float | None:
    """Population stability index of two histograms over the same bins; None if either is empty."""
    if len(expected) != len(actual):
        raise ValueError(f"psi: {len(expected)} expected bins but {len(actual)} actual bins")
    e_total, a_total = float(sum(expected)), float(sum(actual))
    if e_total <= 0 or a_total <= 0:
        return None
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e_frac, a_frac = max(e / e_total, floor), max(a / a_total, floor)
        total += (a_frac - e_frac) * math.log(a_frac / e_frac)
    return total


# -- profiling ------------------------------------------------------------------------------------------

def _kind(data_type: Any) -> str:
    from pyspark.sql import types as T

    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return TEMPORAL
    if isinstance(data_type, T.NumericType):
        return NUMERIC
    if isinstance(data_type, (T.StringType, T.BooleanType)):
        return CATEGORICAL
    return OTHER


def _value(name: str, data_type: Any) -> Column:
    """The column as double (numeric, temporal: epoch seconds / days) or string; NaN as null."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    col = F.col(f"`{name}`")
    if isinstance(data_type, (T.FloatType, T.DoubleType)):
        return F.when(~F.isnan(col), col.cast("double"))
    if isinstance(data_type, (T.TimestampType, T.TimestampNTZType)):
        return F.unix_micros(col.cast("timestamp")) / 1_000_000.0
    if isinstance(data_type, T.DateType):
        return F.unix_date(col).cast("double")
    kind = _kind(data_type)
    return col.cast("double") if kind == NUMERIC else col.cast("string") if kind == CATEGORICAL else col


def default_columns(df: DataFrame) -> list[str]:
    """Data columns: lineage columns (``_*``) and the ``dt`` partition column are left out."""
    return [c for c in df.columns if not c.startswith("_") and c != "dt"]


def _edge_probs(bins: int) -> list[float]:
    return [j / bins for j in range(1, bins)]


def _pass_one(df: DataFrame, group: str, columns: list[tuple[str, Any, str]],
              probs: list[float]) -> dict[Any, dict[str, Any]]:
    """Per value of ``group``: row count, nulls, NaNs, distinct count, moments and quantiles of each column."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    aggs = [F.count(F.lit(1)).alias("rows")]
    for i, (name, data_type, kind) in enumerate(columns):
        raw, value = F.col(f"`{name}`"), _value(name, data_type)
        aggs.append(F.count(raw).alias(f"{i}_nonnull"))
        if isinstance(data_type, (T.FloatType, T.DoubleType)):
            aggs.append(F.count_if(F.isnan(raw)).alias(f"{i}_nans"))
        if kind == OTHER:
            continue
        aggs.append(F.approx_count_distinct(value, 0.02).alias(f"{i}_distinct"))
        if kind in (NUMERIC, TEMPORAL):
            aggs += [F.min(value).alias(f"{i}_min"), F.max(value).alias(f"{i}_max"),
                     F.avg(value).alias(f"{i}_mean"), F.stddev_samp(value).alias(f"{i}_std"),
                     F.percentile_approx(value, probs, 10000).alias(f"{i}_q")]
    return {row[_GROUP]: row.asDict() for row in df.groupBy(F.col(group).alias(_GROUP)).agg(*aggs).collect()}


def _own_profiles(one: Mapping[str, Any], cols: list[tuple[str, Any, str]], probs: list[float],
                  bins: int) -> dict[str, ColumnProfile]:
    """The profiles of one group from its pass-one row; numeric columns get their quantile bin edges."""
    profiles: dict[str, ColumnProfile] = {}
    for i, (name, data_type, kind) in enumerate(cols):
        nonnull = one[f"{i}_nonnull"]
        p = ColumnProfile(column=name, data_type=data_type.simpleString(), kind=kind, count=one["rows"],
                          nulls=one["rows"] - nonnull, nans=one.get(f"{i}_nans") or 0,
                          distinct=one.get(f"{i}_distinct"))
        if kind in (NUMERIC, TEMPORAL):
            p.min, p.max, p.mean, p.std = (one[f"{i}_{s}"] for s in ("min", "max", "mean", "std"))
            values = one[f"{i}_q"]
            if values is not None:
                p.quantiles = [(q, float(v)) for q, v in zip(probs, values, strict=True) if q in REPORT_QUANTILES]
                if kind == NUMERIC:
                    by_prob = dict(zip(probs, values, strict=True))
                    p.bin_edges = sorted({float(by_prob[q]) for q in _edge_probs(bins)})
        profiles[name] = p
    return profiles


def _bins_of(value: Column, edges: Column) -> Column:
    """The bin ``(e[j-1], e[j]]`` holding ``value`` for per-row sorted ``edges`` (an array column): the number of
    edges below the value, 0 .. len(edges); null for a null value or no edges."""
    from pyspark.sql import functions as F

    return F.when(value.isNotNull() & edges.isNotNull(), F.size(F.filter(edges, lambda e: e < value)))


def _counts(df: DataFrame, group: str, cols: list[tuple[str, Any, str]], own: Mapping[Any, Mapping[str, ColumnProfile]],
            refs: Mapping[Any, Mapping[str, ColumnProfile]]) -> DataFrame | None:
    """``(_g, i, side, key, count)``: per group and column the counts of its own bins (side ``o``; the values
    of a string column) and of its reference's bins (side ``r``, numeric columns), in one pass."""
    from pyspark.sql import functions as F

    keyed, numeric = [], []
    for i, (name, data_type, kind) in enumerate(cols):
        value = _value(name, data_type)
        if kind == NUMERIC:
            numeric.append(i)
            keyed.append(F.struct(F.lit(i).alias("i"), value.alias("num"), F.lit(None).cast("string").alias("str")))
        elif kind == CATEGORICAL:
            keyed.append(F.struct(F.lit(i).alias("i"), F.lit(None).cast("double").alias("num"), value.alias("str")))
    if not keyed:
        return None
    rows = df.select(F.col(group).alias(_GROUP), F.explode(F.array(*keyed)).alias("e")).select(_GROUP, "e.*")
    if numeric:
        edges = [(g, i, own[g][cols[i][0]].bin_edges or None,
                  (refs.get(g, {}).get(cols[i][0]) or ColumnProfile("", "", "", 0, 0)).bin_edges or None)
                 for g in own for i in numeric]
        table = df.sparkSession.createDataFrame(
            edges, f"{_GROUP} {df.schema[group].dataType.simpleString()}, i int, own array<double>, ref array<double>")
        rows = rows.join(F.broadcast(table), [_GROUP, "i"], "left")
    else:
        rows = rows.withColumn("own", F.lit(None).cast("array<double>")).withColumn("ref", F.lit(None).cast(
            "array<double>"))
    sides = F.array(
        F.struct(F.lit("o").alias("side"), F.coalesce(_bins_of(F.col("num"), F.col("own")).cast("string"),
                                                       F.col("str")).alias("key")),
        F.struct(F.lit("r").alias("side"), _bins_of(F.col("num"), F.col("ref")).cast("string").alias("key")))
    return (rows.select(_GROUP, "i", F.explode(sides).alias("s")).select(_GROUP, "i", "s.side", "s.key")
            .where(F.col("key").isNotNull()).groupBy(_GROUP, "i", "side", "key").count())


def _own_bins(counts: DataFrame, cols: list[tuple[str, Any, str]], own: Mapping[Any, Mapping[str, ColumnProfile]],
              top_k: int) -> dict[tuple[Any, int], list[tuple[str, int]]]:
    """Fill each profile's histogram (numeric) or top values (strings) from :func:`_counts`; returns the
    reference-bin counts of the numeric columns per ``(group, column index)``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    numeric = [i for i, (_, _, kind) in enumerate(cols) if kind == NUMERIC]
    rank = Window.partitionBy(_GROUP, "i", "side").orderBy(F.col("count").desc(), F.col("key"))
    kept = counts.withColumn("_rank", F.row_number().over(rank)).where(
        F.col("i").isin(numeric) | (F.col("_rank") <= top_k))
    ref_bins: dict[tuple[Any, int], list[tuple[str, int]]] = {}
    for row in sorted(kept.collect(), key=lambda r: (r[_GROUP], r["i"], r["side"], r["_rank"])):
        g, i = row[_GROUP], row["i"]
        name, _, kind = cols[i]
        p = own[g][name]
        if row["side"] == "r":
            ref_bins.setdefault((g, i), []).append((row["key"], row["count"]))
        elif kind == NUMERIC:
            if not p.bin_counts:
                p.bin_counts = [0] * (len(p.bin_edges) + 1)
            p.bin_counts[int(row["key"])] = row["count"]
        else:
            p.top_values.append((row["key"], row["count"]))
    return ref_bins


def _ref_top_counts(counts: DataFrame, cols: list[tuple[str, Any, str]],
                    refs: Mapping[Any, Mapping[str, ColumnProfile]]) -> dict[tuple[Any, int, str], int]:
    """How often each reference top value of a string column occurs in its group."""
    from pyspark.sql import functions as F

    wanted = [(g, i, v) for g, by_col in refs.items() for i, (name, _, kind) in enumerate(cols)
              if kind == CATEGORICAL and name in by_col for v, _ in by_col[name].top_values]
    if not wanted:
        return {}
    schema = f"{_GROUP} {counts.schema[_GROUP].dataType.simpleString()}, i int, key string"
    table = counts.sparkSession.createDataFrame(wanted, schema)
    found = counts.where(F.col("side") == "o").join(F.broadcast(table), [_GROUP, "i", "key"])
    return {(r[_GROUP], r["i"], r["key"]): r["count"] for r in found.collect()}


def _comparable(base: ColumnProfile, kind: str, max_categories: int | None) -> bool:
    """Same kind, and for strings few enough values that the top values describe the column."""
    if base.kind != kind:
        return False
    return kind != CATEGORICAL or max_categories is None or (base.distinct or 0) <= max_categories


def profile_groups(df: DataFrame, group: str, columns: Sequence[str] | None = None,
                   reference: Callable[[Any, Mapping[Any, dict[str, ColumnProfile]]], Mapping[str, ColumnProfile]]
                   | None = None, *, bins: int = 10, top_k: int = 20,
                   max_categories: int | None = None) -> dict[Any, list[ColumnProfile]]:
    """:func:`profile` of every value of ``group`` (a ``dt`` range, say) in the same passes over ``df``.

    ``reference(g, profiles)`` gives the baseline of group ``g`` (a mapping column -> profile, possibly
    empty); ``profiles`` are this call's own profiles of every group (their bin edges set, their
    histograms filled in before any PSI is computed), so a group may be compared with another one
    (the previous date of a range).
    """
    from pyspark import StorageLevel

    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    names = list(columns) if columns is not None else [c for c in default_columns(df) if c != group]
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"profile: no such columns {missing} (columns: {df.columns})")
    types = {f.name: f.dataType for f in df.schema.fields}
    cols = [(n, types[n], _kind(types[n])) for n in names]
    probs = sorted(set(REPORT_QUANTILES) | set(_edge_probs(bins)))
    ones = _pass_one(df, group, cols, probs)
    own = {g: _own_profiles(one, cols, probs, bins) for g, one in sorted(ones.items())}
    refs = {g: {n: b for n, b in (reference(g, own) if reference else {}).items()
                if n in types and _comparable(b, _kind(types[n]), max_categories)} for g in own}
    counts = _counts(df, group, cols, own, refs)
    ref_bins: dict[tuple[Any, int], list[tuple[str, int]]] = {}
    tops: dict[tuple[Any, int, str], int] = {}
    if counts is not None:
        counts = counts.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            ref_bins = _own_bins(counts, cols, own, top_k)
            tops = _ref_top_counts(counts, cols, refs)
        finally:
            counts.unpersist()
    for g, by_col in own.items():
        for i, (name, _, kind) in enumerate(cols):
            base = refs[g].get(name)
            if base is not None and base.kind == kind:
                by_col[name].psi = _psi_against(base, by_col[name], g, i, ref_bins, tops)
    return {g: [by_col[n] for n in names] for g, by_col in own.items()}


def profile(df: DataFrame, columns: Sequence[str] | None = None,
            baseline: Mapping[str, ColumnProfile] | None = None, *, bins: int = 10,
            top_k: int = 20, max_categories: int | None = None) -> list[ColumnProfile]:
    """Profile ``columns`` (default: :func:`default_columns`) of ``df``; PSI against ``baseline``.

    String columns whose baseline has more than ``max_categories`` distinct values (identifiers,
    free text) are profiled but get no PSI: their values do not recur from one run to the next.
    """
    from pyspark.sql import functions as F

    names = list(columns) if columns is not None else default_columns(df)
    found = profile_groups(df.withColumn(_WHOLE, F.lit(0)), _WHOLE, names, lambda g, own: baseline or {}, bins=bins,
                           top_k=top_k, max_categories=max_categories)
    if not found:  # no rows at all
        return [ColumnProfile(column=n, data_type=df.schema[n].dataType.simpleString(),
                              kind=_kind(df.schema[n].dataType), count=0, nulls=0) for n in names]
    return found[0]


def _bin_labels(base: ColumnProfile) -> list[str]:
    if base.kind == NUMERIC:
        e = base.bin_edges
        inner = [f"({e[j - 1]:.6g}, {e[j]:.6g}]" for j in range(1, len(e))]
        return [f"<= {e[0]:.6g}", *inner, f"> {e[-1]:.6g}", "missing"] if e else ["all", "missing"]
    return [repr(v) for v, _ in base.top_values] + ["other", "missing"]


def _top_shifts(base: ColumnProfile, expected: Sequence[int], actual: Sequence[int],
                n: int = 3) -> list[tuple[str, float, float]]:
    e_total, a_total = float(sum(expected)) or 1.0, float(sum(actual)) or 1.0
    shares = [(label, e / e_total, a / a_total) for label, e, a in zip(_bin_labels(base), expected, actual,
                                                                       strict=True)]
    return sorted(shares, key=lambda x: -abs(x[2] - x[1]))[:n]


def _psi_against(base: ColumnProfile, current: ColumnProfile, g: Any, i: int,
                 ref_bins: Mapping[tuple[Any, int], list[tuple[str, int]]],
                 tops: Mapping[tuple[Any, int, str], int]) -> float | None:
    expected = base.distribution()
    if expected is None:
        return None
    if current.kind == NUMERIC:
        actual = [0] * len(base.bin_counts)
        for key, count in ref_bins.get((g, i), []):
            actual[int(key)] = count
    else:
        actual = [tops.get((g, i, v), 0) for v, _ in base.top_values]
        actual.append(current.present - sum(actual))
    actual.append(current.missing)
    current.shifted = _top_shifts(base, expected, actual)
    return psi(expected, actual)


# -- the gate ---------------------------------------------------------------------------------------------

def _threshold(table: str, column: str, default: float, overrides: Mapping[str, float]) -> float:
    return float(overrides.get(f"{table}.{column}", default))


def compare(table: str, profiles: Sequence[ColumnProfile], default_threshold: float,
            overrides: Mapping[str, float] | None = None) -> list[Finding]:
    """Columns whose PSI is above their threshold (``overrides`` keyed ``'<table>.<column>'``)."""
    overrides = overrides or {}
    out = []
    for p in profiles:
        limit = _threshold(table, p.column, default_threshold, overrides)
        if p.psi is not None and p.psi > limit:
            out.append(Finding(table, p.column, p.kind, p.psi, limit))
    return out


def drift_report(results: Sequence[TableValidation]) -> str:
    """A readable report of every failed table: problems, then one line per drifted column."""
    lines = []
    for r in results:
        if r.passed:
            continue
        against = f" against dt={r.baseline_dt} run {r.baseline_run_id}" if r.baseline_dt else ""
        lines.append(f"data quality gate failed for {r.table} dt={r.dt} (run {r.run_id}){against}:")
        lines += [f"  {problem}" for problem in r.problems]
        if r.findings:
            width = max(len("column"), *(len(f.column) for f in r.findings))
            lines.append(f"  {'column':<{width}}  {'kind':<11}  {'PSI':>8}  {'threshold':>9}  most shifted bins "
                         "(reference share -> current share)")
            shifted = {p.column: p.shifted for p in r.profiles}
            lines += [f"  {f.column:<{width}}  {f.kind:<11}  {f.psi:>8.4f}  {f.threshold:>9.4f}  "
                      + "; ".join(f"{b} {e:.1%} -> {a:.1%}" for b, e, a in shifted.get(f.column, []))
                      for f in sorted(r.findings, key=lambda f: -f.psi)]
    return "\n".join(lines)


# -- the stats table --------------------------------------------------------------------------------------

def stats_rows(result: TableValidation, thresholds: Mapping[str, float], computed_at: dt.datetime) -> list[tuple]:
    """The stats-table rows of ``result`` (one per column); ``thresholds`` maps column -> PSI threshold."""
    rows = []
    for p in result.profiles:
        limit = thresholds.get(p.column)
        rows.append((result.table, result.dt, result.run_id, computed_at, p.column, p.data_type, p.kind, p.count,
                     p.nulls, p.nans, p.distinct, p.min, p.max, p.mean, p.std,
                     [(q, v) for q, v in p.quantiles], p.bin_edges, p.bin_counts,
                     [(v, c) for v, c in p.top_values], p.psi, limit, result.baseline_dt, result.baseline_run_id,
                     p.psi is None or limit is None or p.psi <= limit))
    return rows


def stats_frame(spark: SparkSession, result: TableValidation, thresholds: Mapping[str, float],
                computed_at: dt.datetime) -> DataFrame:
    """One stats-table row per column of ``result``; ``thresholds`` maps column -> PSI threshold."""
    return spark.createDataFrame(stats_rows(result, thresholds, computed_at), STATS_SCHEMA)


def profiles_from_rows(rows: Sequence[Row]) -> dict[str, ColumnProfile]:
    """Stats-table rows of one run back into profiles, keyed by column."""
    return {r["column_name"]: ColumnProfile(
        column=r["column_name"], data_type=r["data_type"], kind=r["kind"], count=r["row_count"], nulls=r["nulls"],
        nans=r["nans"], distinct=r["distinct_approx"], min=r["min"], max=r["max"], mean=r["mean"], std=r["std"],
        quantiles=[(q["p"], q["value"]) for q in r["quantiles"] or []], bin_edges=list(r["bin_edges"] or []),
        bin_counts=list(r["bin_counts"] or []), top_values=[(t["value"], t["count"]) for t in r["top_values"] or []],
        psi=r["psi"]) for r in rows}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load_baseline(spark: SparkSession, lake: Lake, stats_uri: str, table: str,
                  before: str) -> tuple[str, str, dict[str, ColumnProfile]] | None:
    """``(dt, run_id, profiles)`` of the latest stored run of ``table`` with ``dt < before``."""
    from pyspark.sql import functions as F

    if not lake.exists(stats_uri):
        return None
    stored = lake.read(spark, stats_uri, where=f"table_name = {_quote(table)} AND dt < {_quote(before)}")
    latest = (stored.select("dt", "run_id", "computed_at").distinct()
              .orderBy(F.col("dt").desc(), F.col("computed_at").desc()).first())
    if latest is None:
        return None
    rows = stored.where((F.col("dt") == latest["dt"]) & (F.col("run_id") == latest["run_id"])).collect()
    return latest["dt"], latest["run_id"], profiles_from_rows(rows)


@dataclass
class Reference:
    """What a partition is compared with: profiles, a label for the report, and each pooled run's distinct
    counts per column (to tell columns that are constant in every partition)."""

    label: str
    profiles: dict[str, ColumnProfile]
    run_distincts: dict[str, list[int | None]]
    dt: str | None = None
    run_id: str | None = None


def _window_reference(spark: SparkSession, lake: Lake, conf: Conf, table: str,
                      days: Sequence[str]) -> dict[str, Reference]:
    """Per date: the ``validate.reference_runs`` latest partitions before it, pooled and profiled, every date's
    pool in the same passes (each row of a partition goes to the pools of the dates it precedes)."""
    from pyspark.sql import functions as F

    n, partitions = conf["validate.reference_runs"], lake.partition_values(table)
    pools = {d: [p for p in partitions if p < d][-n:] for d in days}
    pools = {d: pool for d, pool in pools.items() if pool}
    if not pools:
        return {}
    serves: dict[str, list[str]] = {}
    for d, pool in pools.items():
        for p in pool:
            serves.setdefault(p, []).append(d)
    wanted = sorted(serves)
    frame = lake.read(spark, table, where=_in(wanted))
    lookup = F.create_map(*[x for p in wanted for x in (F.lit(p), F.array(*[F.lit(d) for d in serves[p]]))])
    pooled = frame.withColumn(_POOL, F.explode(lookup[F.col("dt")]))
    columns = default_columns(frame)
    profiles = profile_groups(pooled, _POOL, columns, bins=conf["validate.bins"], top_k=conf["validate.top_k"])
    distincts = _partition_distincts(frame, profiles[next(iter(profiles))]) if profiles else {}
    return {d: Reference(f"{len(pool)} partitions dt={pool[0]}..{pool[-1]}", {p.column: p for p in profiles[d]},
                         {c: [by_dt.get(p) for p in pool] for c, by_dt in distincts.items()}, dt=pool[-1])
            for d, pool in pools.items() if d in profiles}


def _partition_distincts(frame: DataFrame, profiles: Sequence[ColumnProfile]) -> dict[str, dict[str, int | None]]:
    """Per numeric column, its approximate distinct count in each ``dt`` partition of ``frame``."""
    from pyspark.sql import functions as F

    numeric = [p.column for p in profiles if p.kind == NUMERIC]
    if not numeric:
        return {}
    rows = frame.groupBy("dt").agg(*[F.approx_count_distinct(F.col(f"`{c}`"), 0.02).alias(c) for c in numeric])
    out: dict[str, dict[str, int | None]] = {c: {} for c in numeric}
    for row in rows.collect():
        for c in numeric:
            out[c][row["dt"]] = row[c]
    return out


def _pinned_reference(spark: SparkSession, lake: Lake, conf: Conf, table: str) -> Reference:
    pinned = conf["validate.reference_date"]
    if not pinned:
        raise ConfError("validate.reference: pinned needs validate.reference_date (YYYY-MM-DD)")
    frame = lake.read(spark, table, where=f"dt = {_quote(pinned)}")
    profiles = profile(frame, bins=conf["validate.bins"], top_k=conf["validate.top_k"])
    if not profiles or profiles[0].count == 0:
        raise DataQualityError(f"validate.reference_date {pinned}: {table} has no rows for that date")
    return Reference(f"pinned dt={pinned}", {p.column: p for p in profiles},
                     {p.column: [p.distinct] for p in profiles}, dt=pinned)


def _stored_reference(spark: SparkSession, lake: Lake, table: str, before: str) -> Reference | None:
    found = load_baseline(spark, lake, lake.uri(STATS_TABLE), table, before)
    if found is None:
        return None
    base_dt, base_run, profiles = found
    return Reference(f"dt={base_dt} run {base_run}", profiles, {c: [p.distinct] for c, p in profiles.items()},
                     dt=base_dt, run_id=base_run)


def _references(spark: SparkSession, lake: Lake, conf: Conf, table: str, days: list[str],
                run_id: str) -> Callable[[str, Mapping[str, list[ColumnProfile] | dict[str, ColumnProfile]]],
                                         Reference | None]:
    """``reference(day, profiles)``: the reference of each date of ``days`` (``validate.reference``); with
    ``previous`` the date before it in ``days`` that has rows (``profiles``: this run's), else the stored run."""
    how = conf["validate.reference"]
    if how == "pinned":
        pinned = _pinned_reference(spark, lake, conf, table)
        return lambda day, own: pinned
    if how == "window":
        windows = _window_reference(spark, lake, conf, table, days)
        return lambda day, own: windows.get(day)
    stored = _stored_reference(spark, lake, table, days[0])

    def previous(day: str, own: Mapping[str, Any]) -> Reference | None:
        earlier = [d for d in days if d < day and own.get(d) and _rows(own[d])]
        if not earlier:
            return stored
        by_col = own[earlier[-1]]
        profiles = by_col if isinstance(by_col, dict) else {p.column: p for p in by_col}
        return Reference(f"dt={earlier[-1]} run {run_id}", profiles,
                         {c: [p.distinct] for c, p in profiles.items()}, dt=earlier[-1], run_id=run_id)
    return previous


def _rows(profiles: list[ColumnProfile] | dict[str, ColumnProfile]) -> int:
    first = next(iter(profiles.values() if isinstance(profiles, dict) else profiles), None)
    return first.count if first is not None else 0


def reference_for(spark: SparkSession, lake: Lake, conf: Conf, table: str, day: str) -> Reference | None:
    """The reference of ``validate.reference`` for ``table``'s partition ``day``; None on a first run."""
    return _references(spark, lake, conf, table, [day], "")(day, {})


_INTEGRAL = ("tinyint", "smallint", "int", "bigint")


def unchecked_reason(current: ColumnProfile, base: ColumnProfile | None, run_distincts: Sequence[int | None],
                     max_categories: int | None) -> str | None:
    """Why the PSI of ``current`` against ``base`` would mean nothing (the column is reported, not gated)."""
    if current.kind == TEMPORAL:
        return "a time column: its range moves with the run date"
    if base is None or current.kind == OTHER:
        return None
    if current.kind == CATEGORICAL and max_categories is not None and (base.distinct or 0) > max_categories:
        return f"more than {max_categories} distinct values (an identifier or free text)"
    if current.kind != NUMERIC:
        return None
    if (current.distinct or 0) <= 1 and run_distincts and all(d is not None and d <= 1 for d in run_distincts):
        return "constant within every partition (a calendar or partition-key column)"
    if current.data_type not in _INTEGRAL:
        return None
    if current.present >= 50 and (current.distinct or 0) >= 0.95 * current.present \
            and (base.distinct or 0) >= 0.95 * max(base.present, 1):
        return "near-unique values in every run (an identifier)"
    if None not in (current.min, current.max, base.min, base.max) and \
            (current.min > base.max or current.max < base.min):  # type: ignore[operator]
        return "values moved past the reference range (a counter or a date-like number)"
    return None


def _policy(conf: Conf, table: str, column: str) -> str:
    policy = conf["validate.columns"].get(f"{table}.{column}", "fail")
    if policy not in ("ignore", "warn", "fail"):
        raise ConfError(f"{conf.origin('validate.columns')}: validate.columns.{table}.{column}: expected one of "
                        f"ignore, warn, fail, got {policy!r}")
    return policy


def _gate(conf: Conf, result: TableValidation, reference: Reference | None) -> None:
    """Sort the profiled columns into unchecked, warned and failing findings."""
    table, profiles = result.table, result.profiles
    for p in profiles:
        base = reference.profiles.get(p.column) if reference else None
        why = "ignored by validate.columns" if _policy(conf, table, p.column) == "ignore" else unchecked_reason(
            p, base, reference.run_distincts.get(p.column, []) if reference else [], conf["validate.max_categories"])
        if why:
            result.unchecked[p.column] = why
            p.psi = None
    default, overrides = conf["validate.psi_threshold"], conf["validate.column_thresholds"]
    for finding in compare(table, profiles, default, overrides):
        (result.warned if _policy(conf, table, finding.column) == "warn" else result.findings).append(finding)
    result.warnings += [f"{f.column}: PSI {f.psi:.4f} above {f.threshold:.4f} (warn only)" for f in result.warned]


def validate_table(spark: SparkSession, conf: Conf, table: str, run_date: dt.date, run_id: str) -> TableValidation:
    """Profile ``table``'s ``dt = run_date`` partition, compare it with its reference, store the stats.

    The reference is ``validate.reference``: the previous run (default), a trailing window of
    ``validate.reference_runs`` runs, or ``validate.reference_date``.  Columns whose PSI means nothing
    (time columns, columns constant in every partition, identifiers, counters) and columns a policy ignores
    are reported in ``unchecked``; columns with policy ``warn`` are reported in ``warned``.  Returns the
    result; the caller decides whether failures raise (see :func:`run_validate`).
    """
    (result,) = validate_range(spark, conf, table, [run_date], run_id)
    return result


def validate_range(spark: SparkSession, conf: Conf, table: str, dates: Sequence[dt.date],
                   run_id: str) -> list[TableValidation]:
    """:func:`validate_table` of each date of ``dates``, in one pass per profiling step over all of them.

    Dates whose input is that of their stored run are ``skipped`` (decided from the logs and markers, before any
    data is read); the others are profiled together (grouped by ``dt``), each compared with its own reference
    (with ``reference: previous``, the date before it in the range), and stored in one write.
    """
    lake = Lake.from_conf(conf)
    days = sorted(d.isoformat() for d in dates)
    if not lake.exists(lake.uri(table)):
        return [TableValidation(table, d, run_id, profiles=[], problems=[f"table {table} does not exist at "
                                                                         f"{lake.uri(table)}"]) for d in days]
    results: dict[str, TableValidation] = {}
    pending: list[str] = []
    keys = _InputKeys(conf, lake, table)
    for day in days:
        # with reference: previous, a date after one that is validated again is compared with the new run
        done = None if pending and conf["validate.reference"] == "previous" else _done_before(
            conf, table, day, keys(day))
        if done is not None:
            results[day] = done
        else:
            pending.append(day)
    if pending:
        for result in _validate(spark, conf, lake, table, pending, run_id):
            results[result.dt] = result
            # keyed after the earlier dates' markers are written: the next date's key reads them
            _markers(conf).write_json(_marker(table, result.dt), {
                "input_key": keys(result.dt), "result": dataclasses.asdict(result)})
            keys.written(result.dt)
    return [results[d] for d in days]


def _in(days: Sequence[str]) -> str:
    return "dt IN (" + ", ".join(_quote(d) for d in days) + ")"


def _validate(spark: SparkSession, conf: Conf, lake: Lake, table: str, days: list[str],
              run_id: str) -> list[TableValidation]:
    results = {d: TableValidation(table, d, run_id, profiles=[]) for d in days}
    # from the log: a date with no files has no rows (a table not partitioned by dt is read as it is)
    partitions = lake.partition_values(table)
    present = sorted(set(days) & set(partitions)) if partitions else list(days)
    found: dict[str, list[ColumnProfile]] = {}
    if present:
        references = _references(spark, lake, conf, table, present, run_id)
        found = profile_groups(lake.read(spark, table, where=_in(present)), "dt",
                               reference=lambda d, own: getattr(references(d, own), "profiles", {}),
                               bins=conf["validate.bins"], top_k=conf["validate.top_k"],
                               max_categories=conf["validate.max_categories"])
    written = []
    for day, result in results.items():
        result.profiles = found.get(day, [])
        if not result.profiles or result.profiles[0].count == 0:
            message = f"no rows in {table} for dt={day}"
            (result.warnings if table in conf["validate.allow_empty"] else result.problems).append(message)
            continue
        reference = references(day, found)
        if reference is not None:
            result.baseline_dt, result.baseline_run_id = reference.dt, reference.run_id or reference.label
        _gate(conf, result, reference)
        written.append(result)
    if written:
        limits = {p.column: _threshold(table, p.column, conf["validate.psi_threshold"],
                                       conf["validate.column_thresholds"]) for p in written[0].profiles}
        now = dt.datetime.now(dt.UTC)
        frame = spark.createDataFrame([row for r in written for row in stats_rows(r, limits, now)], STATS_SCHEMA)
        lake.write(frame, lake.uri(STATS_TABLE), mode="overwrite", partition_by=["table_name", "dt"],
                   replace_where=f"table_name = {_quote(table)} AND {_in([r.dt for r in written])}")
    return list(results.values())


# -- re-runs: the input of a validation ----------------------------------------------------------------

# the settings a validation's outcome depends on
_SETTINGS = ("validate.bins", "validate.top_k", "validate.max_categories", "validate.psi_threshold",
             "validate.column_thresholds", "validate.columns", "validate.allow_empty", "validate.reference",
             "validate.reference_runs", "validate.reference_date")


def _markers(conf: Conf) -> Documents:
    return Documents.reports(Lake.from_conf(conf), "validate")


def _marker(table: str, day: str) -> str:
    return f"{table}/dt={day}.json"


class _InputKeys:
    """What the validation of each of ``table``'s partitions depends on, from the table log and the stored markers
    (no data is read; the log and the marker list are read once): the partition's files, the reference's (its
    partitions' files, or the previous run's marker) and the validate settings."""

    def __init__(self, conf: Conf, lake: Lake, table: str) -> None:
        self.conf, self.table = conf, table
        self.files = lake.partition_state(table)[1]
        self.markers = sorted(_markers(conf).list(table, ".json")) if conf["validate.reference"] == "previous" else []

    def __call__(self, day: str) -> str:
        conf, files = self.conf, self.files
        how = conf["validate.reference"]
        if how == "window":
            reference: Any = [(d, files[d]) for d in sorted(files) if d < day][-conf["validate.reference_runs"]:]
        elif how == "pinned":
            reference = [conf["validate.reference_date"], files.get(conf["validate.reference_date"] or "")]
        else:
            earlier = [n for n in self.markers if n < _marker(self.table, day)]
            last = (_markers(conf).read_json(earlier[-1]) or {}) if earlier else {}
            reference = [earlier[-1], last.get("input_key"), (last.get("result") or {}).get("run_id")] \
                if earlier else None
        payload = json.dumps([files.get(day), reference, {k: conf[k] for k in _SETTINGS}], sort_keys=True,
                             default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:20]

    def written(self, day: str) -> None:
        """A marker of ``day`` was written (the next date's key reads it)."""
        if self.conf["validate.reference"] == "previous" and _marker(self.table, day) not in self.markers:
            self.markers = sorted([*self.markers, _marker(self.table, day)])


def _done_before(conf: Conf, table: str, day: str, key: str) -> TableValidation | None:
    """The stored outcome of the run that validated ``day`` from the same input (``skipped``), else None."""
    stored = _markers(conf).read_json(_marker(table, day))
    if not isinstance(stored, dict) or stored.get("input_key") != key or not isinstance(stored.get("result"), dict):
        return None
    r = stored["result"]
    return TableValidation(**{
        **r, "profiles": [ColumnProfile(**p) for p in r["profiles"]], "findings": [Finding(**f) for f in r["findings"]],
        "warned": [Finding(**f) for f in r["warned"]], "skipped": True})


def run_validate(spark: SparkSession, conf: Conf, run_date: dt.date | Sequence[dt.date], run_id: str,
                 table_names: Sequence[str] | None = None) -> list[TableValidation]:
    """Validate every table (default: ``validate.tables``) for ``run_date`` (or each date of a sequence, in
    date order, in this session: a date's reference may be the date before it); raise
    :class:`DataQualityError` on any failure.

    Every table and date is profiled and stored before the gate raises, so one report names all failures.
    """
    dates = [run_date] if isinstance(run_date, dt.date) else list(run_date)
    by_table = [validate_range(spark, conf, t, dates, run_id) for t in table_names or conf["validate.tables"]]
    results = [r for i in range(len(dates)) for r in (results_of[i] for results_of in by_table)]
    if not all(r.passed for r in results):
        error = DataQualityError(drift_report(results))
        error.results = results
        raise error
    return results


DESCRIPTION = "column statistics and drift gate of a run date's partitions (or of each date of --from/--to)"


def add_arguments(parser) -> None:
    """``--table`` (repeatable; default: conf ``validate.tables``), ``--from``/``--to``."""
    parser.add_argument("--table", action="append", default=None, metavar="LAYER.NAME",
                        help="table to validate (repeatable; default: conf validate.tables)")
    add_range_arguments(parser, "a range validated in one pass, each date against its own reference")


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[list[TableValidation]]:
    """The ``validate`` job: profile and drift-check each table's run-date partition (exit 3 on drift)."""
    if not ctx.conf["validate.enabled"]:
        ctx.log.info("validate.enabled is false: nothing to do")
        return JobResult([], {"enabled": False})
    dates = run_dates(ctx.run_date, args)
    days = [d.isoformat() for d in dates]
    try:
        results = run_validate(spark, ctx.conf, dates, ctx.run_id, args.table)
    except DataQualityError as exc:  # the run report still shows every table's PSI
        summary = per_date_summary(days, exc.results, lambda rs: _summary(ctx.conf, rs))
        exc.result = JobResult(exc.results, {**summary, "failed": sorted({r.dt for r in exc.results
                                                                           if not r.passed})})
        raise
    for result in results:
        ctx.log.info("%s dt=%s: %d columns profiled, reference %s", result.table, result.dt,
                     len(result.profiles), result.baseline_run_id or "none (first run)")
        for column, why in result.unchecked.items():
            ctx.log.info("%s.%s not drift-checked: %s", result.table, column, why)
        for warning in result.warnings:
            ctx.log.warning("%s dt=%s: %s", result.table, result.dt, warning)
    return JobResult(results, per_date_summary(days, results, lambda rs: _summary(ctx.conf, rs)))


def _summary(conf: Conf, results: Sequence[TableValidation]) -> dict[str, Any]:
    """Per table: columns profiled, rows, reference, each compared column's PSI and threshold, the columns not
    drift-checked and the warnings."""
    default, overrides = conf["validate.psi_threshold"], conf["validate.column_thresholds"]
    return {"tables": {r.table: {
        "columns": len(r.profiles), "baseline_dt": r.baseline_dt, "reference": r.baseline_run_id,
        "rows": r.profiles[0].count if r.profiles else 0,
        "psi": {p.column: round(p.psi, 6) for p in r.profiles if p.psi is not None},
        "psi_thresholds": {p.column: _threshold(r.table, p.column, default, overrides)
                           for p in r.profiles if p.psi is not None},
        "unchecked": dict(r.unchecked), "warnings": list(r.warnings)} for r in results}}
