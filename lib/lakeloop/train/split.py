"""The holdout split of a model's training rows, and the check that it hit its target.

``hash`` (``train.split_column``)
    ``pmod(xxhash64(column, seed), 10000) < fraction * 10000``: all rows of one value (one entity) land on
    the same side, the split is the same for every re-run and every model the gate compares, no shuffle.
``time`` (``train.time_column``)
    The rows whose label time is among the latest ``fraction`` of the distinct label times are held out
    (at least one time; training keeps at least one): what a forecast is judged on.
``random``
    ``rand(seed) < fraction`` per row: only for rows that are independent of each other.

The realised holdout fraction is measured (it is logged on the MLflow run and in the report).  A split
that misses the target by more than ``train.split_tolerance`` is an error naming the cause, e.g.
``74% holdout for a 20% target: only 3 distinct <column> values`` (a hash split of few values), or too
few label times for a time split.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lakeloop.errors import DataQualityError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

__all__ = ["SplitResult", "holdout_condition", "split", "check_split"]

_BUCKETS = 10_000
KINDS = ("hash", "time", "random")


@dataclass
class SplitResult:
    """How the rows were split."""

    kind: str
    column: str | None
    target: float
    realised: float
    train_rows: int
    holdout_rows: int
    distinct: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time_cutoff(df: DataFrame, column: str, fraction: float) -> tuple[Any, int]:
    from pyspark.sql import functions as F

    times = sorted(r[0] for r in df.select(column).where(F.col(column).isNotNull()).distinct().collect())
    if not times:
        return None, 0
    held = min(len(times) - 1, max(1, round(fraction * len(times)))) if len(times) > 1 else 0
    return (times[len(times) - held] if held else None), len(times)


def holdout_condition(df: DataFrame, kind: str, fraction: float, seed: int,
                      column: str | None) -> tuple[Column, int | None]:
    """The boolean column "this row is held out" and, for hash/time splits, the distinct values behind it."""
    from pyspark.sql import functions as F

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction {fraction}: expected a number between 0 and 1")
    if kind == "hash":
        bucket = F.pmod(F.xxhash64(F.col(column), F.lit(seed)), F.lit(_BUCKETS))
        return bucket < F.lit(int(round(fraction * _BUCKETS))), None
    if kind == "time":
        cutoff, distinct = _time_cutoff(df, column, fraction)
        return (F.col(column) >= F.lit(cutoff)) if cutoff is not None else F.lit(False), distinct
    if kind == "random":
        return F.rand(seed) < F.lit(fraction), None
    raise ValueError(f"unknown split {kind!r}: expected one of {', '.join(KINDS)}")


def split(df: DataFrame, kind: str, fraction: float, seed: int, column: str | None = None,
          tolerance: float | None = None) -> tuple[DataFrame, DataFrame, SplitResult]:
    """(train, holdout, what happened); with ``tolerance`` the realised fraction is checked (:func:`check_split`)."""
    from pyspark.sql import functions as F

    held, distinct = holdout_condition(df, kind, fraction, seed, column)
    marked = df.withColumn("_holdout", held)
    counts = {bool(r[0]): int(r[1]) for r in marked.groupBy("_holdout").count().collect()}
    train_rows, holdout_rows = counts.get(False, 0), counts.get(True, 0)
    total = train_rows + holdout_rows
    if kind == "hash" and column is not None:
        distinct = int(df.select(F.approx_count_distinct(column)).first()[0]) if total else 0
    result = SplitResult(kind=kind, column=column, target=fraction, realised=holdout_rows / total if total else 0.0,
                         train_rows=train_rows, holdout_rows=holdout_rows, distinct=distinct)
    if tolerance is not None:
        check_split(result, tolerance)
    return marked.where(~F.col("_holdout")).drop("_holdout"), marked.where(F.col("_holdout")).drop("_holdout"), result


def check_split(result: SplitResult, tolerance: float) -> None:
    """DataQualityError naming the cause when the realised fraction misses the target by more than ``tolerance``."""
    total = result.train_rows + result.holdout_rows
    if total == 0:
        raise DataQualityError("the holdout split got no rows")
    if abs(result.realised - result.target) <= tolerance and result.train_rows and result.holdout_rows:
        return
    head = f"{result.realised:.0%} holdout for a {result.target:.0%} target"
    if result.kind in ("hash", "time") and result.distinct is not None:
        what = "distinct " + (f"{result.column} values" if result.kind == "hash" else f"label times ({result.column})")
        cause = f"only {result.distinct} {what}"
    else:
        cause = f"only {total} rows"
    raise DataQualityError(f"{head} (tolerance {tolerance}): {cause}; {result.train_rows} training and "
                           f"{result.holdout_rows} holdout rows")
