"""Column statistics of a table partition, stored per run, and a drift (PSI) gate against the last run.

:func:`profile` computes, in two Spark passes over the input:

1. one aggregation: row count, nulls, NaNs, approximate distinct count, min/max/mean/std and
   quantiles of numeric and temporal columns, and -- when a baseline is given -- the counts of the
   current values in the baseline's histogram bins and top values (the inputs of the PSI);
2. one ``groupBy``: the histogram of each numeric column over its own quantile bin edges and the
   ``top_k`` most frequent values of each string column (the baseline of the next run).

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
from collections.abc import Mapping, Sequence
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


def _bucket(value: Column, edges: Sequence[float]) -> Column:
    """Index of the bin ``(e[j-1], e[j]]`` holding ``value`` (0 .. len(edges)); null for null."""
    from pyspark.sql import functions as F

    expr = F.lit(len(edges))
    for j in range(len(edges) - 1, -1, -1):
        expr = F.when(value <= F.lit(float(edges[j])), F.lit(j)).otherwise(expr)
    return F.when(value.isNotNull(), expr)


def default_columns(df: DataFrame) -> list[str]:
    """Data columns: lineage columns (``_*``) and the ``dt`` partition column are left out."""
    return [c for c in df.columns if not c.startswith("_") and c != "dt"]


def _edge_probs(bins: int) -> list[float]:
    return [j / bins for j in range(1, bins)]


def _pass_one(df: DataFrame, columns: list[tuple[str, Any, str]], probs: list[float],
              baseline: Mapping[str, ColumnProfile]) -> dict[str, Any]:
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
        base = baseline.get(name)
        if base is None or base.kind != kind:
            continue
        if kind == NUMERIC and base.bin_counts:
            bucket = _bucket(value, base.bin_edges)
            aggs += [F.count_if(bucket == j).alias(f"{i}_b{j}") for j in range(len(base.bin_edges) + 1)]
        elif kind == CATEGORICAL:
            aggs += [F.count_if(value == F.lit(v)).alias(f"{i}_t{j}") for j, (v, _) in enumerate(base.top_values)]
    return df.agg(*aggs).first().asDict()


def _pass_two(df: DataFrame, columns: list[tuple[str, Any, str]], edges: Mapping[str, list[float]],
              top_k: int) -> dict[int, list[tuple[str, int]]]:
    """Per column index: (bin index or value, count); strings limited to the top ``top_k``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keyed = []
    for i, (name, data_type, kind) in enumerate(columns):
        value = _value(name, data_type)
        if kind == NUMERIC and name in edges:
            keyed.append(F.struct(F.lit(i).alias("i"), _bucket(value, edges[name]).cast("string").alias("key")))
        elif kind == CATEGORICAL:
            keyed.append(F.struct(F.lit(i).alias("i"), value.alias("key")))
    if not keyed:
        return {}
    counts = (df.select(F.explode(F.array(*keyed)).alias("e")).select("e.i", "e.key")
              .where(F.col("key").isNotNull()).groupBy("i", "key").count())
    rank = Window.partitionBy("i").orderBy(F.col("count").desc(), F.col("key"))
    numeric = [i for i, (_, _, kind) in enumerate(columns) if kind == NUMERIC]
    kept = counts.withColumn("_rank", F.row_number().over(rank)).where(
        F.col("i").isin(numeric) | (F.col("_rank") <= top_k))
    out: dict[int, list[tuple[str, int]]] = {}
    for row in kept.orderBy("i", "_rank").collect():
        out.setdefault(row["i"], []).append((row["key"], row["count"]))
    return out


def _comparable(base: ColumnProfile, kind: str, max_categories: int | None) -> bool:
    """Same kind, and for strings few enough values that the top values describe the column."""
    if base.kind != kind:
        return False
    return kind != CATEGORICAL or max_categories is None or (base.distinct or 0) <= max_categories


def profile(df: DataFrame, columns: Sequence[str] | None = None,
            baseline: Mapping[str, ColumnProfile] | None = None, *, bins: int = 10,
            top_k: int = 20, max_categories: int | None = None) -> list[ColumnProfile]:
    """Profile ``columns`` (default: :func:`default_columns`) of ``df``; PSI against ``baseline``.

    String columns whose baseline has more than ``max_categories`` distinct values (identifiers,
    free text) are profiled but get no PSI: their values do not recur from one run to the next.
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    names = list(columns) if columns is not None else default_columns(df)
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"profile: no such columns {missing} (columns: {df.columns})")
    types = {f.name: f.dataType for f in df.schema.fields}
    cols = [(n, types[n], _kind(types[n])) for n in names]
    baseline = {n: b for n, b in (baseline or {}).items()
                if n in types and _comparable(b, _kind(types[n]), max_categories)}
    probs = sorted(set(REPORT_QUANTILES) | set(_edge_probs(bins)))
    one = _pass_one(df, cols, probs, baseline)

    profiles: dict[str, ColumnProfile] = {}
    edges: dict[str, list[float]] = {}
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
                by_prob = dict(zip(probs, values, strict=True))
                edges[name] = sorted({float(by_prob[q]) for q in _edge_probs(bins)})
        profiles[name] = p

    for i, counted in _pass_two(df, cols, edges, top_k).items():
        name, _, kind = cols[i]
        if kind == NUMERIC:
            hist = [0] * (len(edges[name]) + 1)
            for key, count in counted:
                hist[int(key)] = count
            profiles[name].bin_edges, profiles[name].bin_counts = edges[name], hist
        else:
            profiles[name].top_values = counted

    for i, (name, _, kind) in enumerate(cols):
        base = baseline.get(name)
        if base is not None and base.kind == kind:
            profiles[name].psi = _psi_against(base, profiles[name], one, i)
    return [profiles[n] for n in names]


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


def _psi_against(base: ColumnProfile, current: ColumnProfile, one: Mapping[str, Any], i: int) -> float | None:
    expected = base.distribution()
    if expected is None:
        return None
    if current.kind == NUMERIC:
        actual = [one[f"{i}_b{j}"] for j in range(len(base.bin_counts))]
    else:
        actual = [one[f"{i}_t{j}"] for j in range(len(base.top_values))]
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

def stats_frame(spark: SparkSession, result: TableValidation, thresholds: Mapping[str, float],
                computed_at: dt.datetime) -> DataFrame:
    """One stats-table row per column of ``result``; ``thresholds`` maps column -> PSI threshold."""
    rows = []
    for p in result.profiles:
        limit = thresholds.get(p.column)
        rows.append((result.table, result.dt, result.run_id, computed_at, p.column, p.data_type, p.kind, p.count,
                     p.nulls, p.nans, p.distinct, p.min, p.max, p.mean, p.std,
                     [(q, v) for q, v in p.quantiles], p.bin_edges, p.bin_counts,
                     [(v, c) for v, c in p.top_values], p.psi, limit, result.baseline_dt, result.baseline_run_id,
                     p.psi is None or limit is None or p.psi <= limit))
    return spark.createDataFrame(rows, STATS_SCHEMA)


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


def _partition_distincts(frame: DataFrame, profiles: Sequence[ColumnProfile]) -> dict[str, list[int | None]]:
    """Per numeric column, its approximate distinct count in each ``dt`` partition of ``frame``."""
    from pyspark.sql import functions as F

    numeric = [p.column for p in profiles if p.kind == NUMERIC]
    if not numeric:
        return {}
    rows = frame.groupBy("dt").agg(*[F.approx_count_distinct(F.col(f"`{c}`"), 0.02).alias(c) for c in numeric])
    out: dict[str, list[int | None]] = {c: [] for c in numeric}
    for row in rows.collect():
        for c in numeric:
            out[c].append(row[c])
    return out


def _window_reference(spark: SparkSession, lake: Lake, conf: Conf, table: str, day: str) -> Reference | None:
    """The ``validate.reference_runs`` latest partitions before ``day``, profiled as one."""
    dates = [d for d in lake.partition_values(table) if d < day][-conf["validate.reference_runs"]:]
    if not dates:
        return None
    frame = lake.read(spark, table, where="dt IN (" + ", ".join(_quote(d) for d in dates) + ")")
    pooled = profile(frame, bins=conf["validate.bins"], top_k=conf["validate.top_k"])
    label = f"{len(dates)} partitions dt={dates[0]}..{dates[-1]}"
    return Reference(label, {p.column: p for p in pooled}, _partition_distincts(frame, pooled), dt=dates[-1])


def _pinned_reference(spark: SparkSession, lake: Lake, conf: Conf, table: str, day: str) -> Reference | None:
    pinned = conf["validate.reference_date"]
    if not pinned:
        raise ConfError("validate.reference: pinned needs validate.reference_date (YYYY-MM-DD)")
    frame = lake.read(spark, table, where=f"dt = {_quote(pinned)}")
    profiles = profile(frame, bins=conf["validate.bins"], top_k=conf["validate.top_k"])
    if not profiles or profiles[0].count == 0:
        raise DataQualityError(f"validate.reference_date {pinned}: {table} has no rows for that date")
    return Reference(f"pinned dt={pinned}", {p.column: p for p in profiles},
                     {p.column: [p.distinct] for p in profiles}, dt=pinned)


def reference_for(spark: SparkSession, lake: Lake, conf: Conf, table: str, day: str) -> Reference | None:
    """The reference of ``validate.reference`` for ``table``'s partition ``day``; None on a first run."""
    how = conf["validate.reference"]
    if how == "window":
        return _window_reference(spark, lake, conf, table, day)
    if how == "pinned":
        return _pinned_reference(spark, lake, conf, table, day)
    found = load_baseline(spark, lake, lake.uri(STATS_TABLE), table, day)
    if found is None:
        return None
    base_dt, base_run, profiles = found
    return Reference(f"dt={base_dt} run {base_run}", profiles, {c: [p.distinct] for c, p in profiles.items()},
                     dt=base_dt, run_id=base_run)


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
    lake = Lake.from_conf(conf)
    day = run_date.isoformat()
    uri = lake.uri(table)
    result = TableValidation(table, day, run_id, profiles=[])
    if not lake.exists(uri):
        result.problems.append(f"table {table} does not exist at {uri}")
        return result
    key = _input_key(conf, lake, table, day)
    done = _done_before(conf, table, day, key)
    if done is not None:
        return done
    _validate(spark, conf, lake, result)
    _markers(conf).write_json(_marker(table, day), {"input_key": key, "result": dataclasses.asdict(result)})
    return result


def _validate(spark: SparkSession, conf: Conf, lake: Lake, result: TableValidation) -> None:
    table, day = result.table, result.dt
    uri, stats_uri = lake.uri(table), lake.uri(STATS_TABLE)
    df = lake.read(spark, uri, where=f"dt = {_quote(day)}")
    reference = reference_for(spark, lake, conf, table, day)
    if reference is not None:
        result.baseline_dt, result.baseline_run_id = reference.dt, reference.run_id or reference.label
    result.profiles = profile(df, baseline=reference.profiles if reference else {}, bins=conf["validate.bins"],
                              top_k=conf["validate.top_k"], max_categories=conf["validate.max_categories"])
    if not result.profiles or result.profiles[0].count == 0:
        message = f"no rows in {table} for dt={day}"
        (result.warnings if table in conf["validate.allow_empty"] else result.problems).append(message)
        return
    _gate(conf, result, reference)
    limits = {p.column: _threshold(table, p.column, conf["validate.psi_threshold"], conf["validate.column_thresholds"])
              for p in result.profiles}
    frame = stats_frame(spark, result, limits, dt.datetime.now(dt.UTC))
    lake.write(frame, stats_uri, mode="overwrite", partition_by=["table_name", "dt"],
               replace_where=f"table_name = {_quote(table)} AND dt = {_quote(day)}")


# -- re-runs: the input of a validation ----------------------------------------------------------------

# the settings a validation's outcome depends on
_SETTINGS = ("validate.bins", "validate.top_k", "validate.max_categories", "validate.psi_threshold",
             "validate.column_thresholds", "validate.columns", "validate.allow_empty", "validate.reference",
             "validate.reference_runs", "validate.reference_date")


def _markers(conf: Conf) -> Documents:
    return Documents.reports(Lake.from_conf(conf), "validate")


def _marker(table: str, day: str) -> str:
    return f"{table}/dt={day}.json"


def _input_key(conf: Conf, lake: Lake, table: str, day: str) -> str:
    """What the validation of ``table``'s partition ``day`` depends on, from table logs and stored markers (no
    data is read): the partition's files, the reference's (its partitions' files, or the previous run's
    marker) and the validate settings."""
    _, files = lake.partition_state(table)
    how = conf["validate.reference"]
    if how == "window":
        reference: Any = [(d, files[d]) for d in sorted(files) if d < day][-conf["validate.reference_runs"]:]
    elif how == "pinned":
        reference = [conf["validate.reference_date"], files.get(conf["validate.reference_date"] or "")]
    else:
        earlier = [n for n in _markers(conf).list(table, ".json") if n < _marker(table, day)]
        last = (_markers(conf).read_json(earlier[-1]) or {}) if earlier else {}
        reference = [earlier[-1], last.get("input_key"), (last.get("result") or {}).get("run_id")] if earlier else None
    payload = json.dumps([files.get(day), reference, {k: conf[k] for k in _SETTINGS}], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


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
    results = [validate_table(spark, conf, t, day, run_id) for day in dates
               for t in table_names or conf["validate.tables"]]
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
    add_range_arguments(parser, "a range validated in one run, date by date")


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
