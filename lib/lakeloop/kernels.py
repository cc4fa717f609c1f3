"""Sequential per-key kernels in numba, run through ``mapInArrow``: time-decayed sums and sessions.

Both kernels read rows grouped by key inside each partition (:func:`prepare_keyed`) and share the
batch plumbing: :func:`keyed_tables` cuts the Arrow batches of a partition into tables of whole keys
(a key whose rows straddle a batch boundary is carried into the next table) and refuses nulls;
:func:`key_starts` marks the first row of every key.  Each kernel then makes one pass over a table.

**Decayed sum.**  The decayed sum of key ``k`` (an entity) for group ``g`` (a value of a grouping
column) as of ``t_ref`` is

    sum over k's rows r in g with r.ts < t_ref of 2 ** (-(t_ref - r.ts) / half_life)

that is ``exp(-(t_ref - t) / tau)`` with ``tau = half_life / ln 2``: a row one half-life old weighs
0.5.  Input rows have the columns ``key`` (long), ``group`` (string) and ``ts``
(:func:`prepare_decay_input`); the kernel accumulates the groups of the current key in a small array
indexed by the table's dictionary code of the group.  The sum needs no order, so plain Spark SQL
(:func:`decay_sql`, one hash aggregation) computes it too.

**Sessions.**  The rows of a key ordered by time split into sessions wherever the gap between two
consecutive rows is longer than ``gap`` (a gap of exactly ``gap`` stays in the session).  Per key:
``sessions``, ``events``, ``duration_us`` (the sum over sessions of last minus first time) and
``longest_us`` (the longest session).  This needs the rows in time order and one state per key, which
SQL only reaches with a window (:func:`sessions_sql`: ``lag``, a running sum, two aggregations).

:func:`decay_pandas` and :func:`sessions_pandas` are the plain pandas references the kernels are
tested against.  :mod:`lakeloop.featuresets` maps a feature set's columns onto these
(``kind: decay`` and ``kind: sessions``).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["DECAY_SCHEMA", "SESSION_FIELDS", "decay_sums", "decay_batches", "decay_numba", "decay_pandas",
           "decay_pandas_partitions", "decay_sql", "freeze_heap_once", "key_starts", "keyed_tables",
           "prepare_decay_input", "prepare_keyed", "session_stats", "sessions_batches", "sessions_numba",
           "sessions_pandas", "sessions_pandas_partitions", "sessions_schema", "sessions_sql"]

#: Output of every decay implementation: one row per (key, group) seen before ``t_ref``.
DECAY_SCHEMA = "key long, group string, value double, n long"
#: Columns every sessions implementation adds to the key columns, all ``long``.
SESSION_FIELDS = ("sessions", "events", "duration_us", "longest_us")

_MICROS = 1_000_000


# -- shared plumbing ------------------------------------------------------------------------------------

def key_starts(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """Boolean array, True on the first row of every run of equal ``keys`` (rows grouped by key)."""
    n = table.num_rows
    starts = np.zeros(n, np.bool_)
    if n == 0:
        return starts
    starts[0] = True
    for name in keys:
        col = table.column(name).combine_chunks()
        if pa.types.is_integer(col.type):
            values = col.to_numpy()
            starts[1:] |= values[1:] != values[:-1]
        else:
            starts[1:] |= pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return starts


def keyed_tables(batches: Iterator[pa.RecordBatch], keys: Sequence[str], columns: Sequence[str],
                 what: str) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """``(table, key_starts)`` of whole keys from a partition's batches grouped by ``keys``.

    A key whose rows straddle a batch boundary is carried into the next table, so each key is in
    exactly one table.  Nulls in ``columns`` raise a :class:`ValueError` naming them (``what`` names
    the kernel in the message).
    """
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch]).select(list(columns))
        nulls = [c for c in table.column_names if table.column(c).null_count]
        if nulls:
            raise ValueError(f"{what} input has nulls in {nulls}: give them a value or filter them out "
                             "before the kernel")
        if carry is not None:
            table = pa.concat_tables([carry, table])
        table = table.combine_chunks()
        starts = key_starts(table, keys)
        cut = int(np.flatnonzero(starts)[-1])  # first row of the last key: it may go on in the next batch
        carry = table.slice(cut)
        if cut:
            yield table.slice(0, cut), starts[:cut]
    if carry is not None and carry.num_rows:
        yield carry, key_starts(carry, keys)


_frozen = False


def freeze_heap_once() -> None:
    """``gc.freeze()`` once per Python worker, after the kernels' imports: PySpark's worker runs a full
    ``gc.collect()`` after every task, whose cost grows with the objects numpy, pandas, pyarrow and numba
    leave tracked; frozen objects are not scanned again."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


def _map_keyed(batches: Iterator[pa.RecordBatch], keys: Sequence[str], columns: Sequence[str], what: str,
               kernel: Callable[[pa.Table, np.ndarray], pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    freeze_heap_once()
    for table, starts in keyed_tables(batches, keys, columns, what):
        yield kernel(table, starts)


def _micros_of(table: pa.Table, column: str) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (Spark sends ``timestamp[us]``)."""
    col = table.column(column)
    if pa.types.is_timestamp(col.type) and col.type.unit != "us":
        col = col.cast(pa.timestamp("us", col.type.tz))
    return col.cast(pa.int64()).to_numpy()


def prepare_keyed(rows: DataFrame, keys: Sequence[str], order: Sequence[str] = (),
                  num_partitions: int | None = None) -> DataFrame:
    """``rows`` hash-partitioned by ``keys`` and sorted by ``keys`` then ``order`` in each partition."""
    df = rows.repartition(num_partitions, *keys) if num_partitions else rows.repartition(*keys)
    return df.sortWithinPartitions(*keys, *order)


# -- decayed sums ---------------------------------------------------------------------------------------

@njit(nogil=True)  # no cache=True: the library may run from a zip (--py-files)
def decay_sums(starts: np.ndarray, code: np.ndarray, t_us: np.ndarray, n_codes: int, t_ref_us: int,
               rate_per_us: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (key, code) sums of ``exp(-(t_ref - t) * rate)`` and counts over rows grouped by key.

    ``starts`` marks each key's first row (:func:`key_starts`).  Returns ``(first_row, code, sum,
    count)`` arrays, one entry per group, groups in order of first appearance inside each key.
    """
    n = code.shape[0]
    out_row = np.empty(n, np.int64)
    out_code = np.empty(n, np.int64)
    out_sum = np.empty(n, np.float64)
    out_cnt = np.empty(n, np.int64)
    acc = np.zeros(n_codes, np.float64)
    cnt = np.zeros(n_codes, np.int64)
    first = np.full(n_codes, -1, np.int64)
    touched = np.empty(n_codes, np.int64)
    n_touched = 0
    g = 0
    for i in range(n + 1):
        if i == n or (i > 0 and starts[i]):
            for j in range(n_touched):
                c = touched[j]
                out_row[g] = first[c]
                out_code[g] = c
                out_sum[g] = acc[c]
                out_cnt[g] = cnt[c]
                g += 1
                acc[c] = 0.0
                cnt[c] = 0
                first[c] = -1
            n_touched = 0
            if i == n:
                break
        c = code[i]
        if first[c] < 0:
            first[c] = i
            touched[n_touched] = c
            n_touched += 1
        acc[c] += math.exp(-(t_ref_us - t_us[i]) * rate_per_us)
        cnt[c] += 1
    return out_row[:g], out_code[:g], out_sum[:g], out_cnt[:g]


def _rate_per_us(half_life_s: float) -> float:
    if not half_life_s > 0:
        raise ValueError(f"half_life must be positive, got {half_life_s} s")
    return math.log(2.0) / (half_life_s * _MICROS)


def _decay_of_table(table: pa.Table, starts: np.ndarray, t_ref_us: int, rate_per_us: float) -> pa.RecordBatch:
    """Run the kernel over one table whose rows are grouped by key."""
    groups = pc.dictionary_encode(table.column("group")).combine_chunks()
    codes = groups.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rows, out_codes, sums, counts = decay_sums(starts, codes, _micros_of(table, "ts"),
                                               max(len(groups.dictionary), 1), t_ref_us, rate_per_us)
    return pa.RecordBatch.from_arrays(
        [table.column("key").take(pa.array(rows)).combine_chunks(), groups.dictionary.take(pa.array(out_codes)),
         pa.array(sums, pa.float64()), pa.array(counts, pa.int64())],
        names=["key", "group", "value", "n"])


def decay_batches(batches: Iterator[pa.RecordBatch], t_ref_us: int,
                  half_life_s: float) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: batches of ``(key, group, ts)`` grouped by key -> decayed sums.

    Every (key, group) pair comes out exactly once per partition.
    """
    rate = _rate_per_us(half_life_s)
    return _map_keyed(batches, ["key"], ["key", "group", "ts"], "decay",
                      lambda table, starts: _decay_of_table(table, starts, t_ref_us, rate))


def _before(rows: DataFrame, t_ref_us: int) -> DataFrame:
    from pyspark.sql import functions as F

    return rows.select("key", "group", "ts").where(F.col("ts") < F.timestamp_micros(F.lit(t_ref_us)))


def prepare_decay_input(rows: DataFrame, t_ref_us: int, num_partitions: int | None = None) -> DataFrame:
    """``(key, group, ts)`` rows strictly before ``t_ref``, grouped by key in each partition.

    ``group`` must already be non-null (callers give missing groups a value explicitly).
    """
    return prepare_keyed(_before(rows, t_ref_us), ["key"], (), num_partitions)


def decay_numba(prepared: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """Decayed sums with the numba kernel through ``mapInArrow`` (input from :func:`prepare_decay_input`)."""
    t_ref, half_life = int(t_ref_us), float(half_life_s)
    return prepared.mapInArrow(lambda it: decay_batches(it, t_ref, half_life), DECAY_SCHEMA)


def decay_sql(rows: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """The same decayed sums in Spark SQL: ``groupBy(key, group)`` of ``exp(-age * ln 2 / half_life)``.

    ``rows`` need no preparation (any partitioning and order); no Python runs.
    """
    from pyspark.sql import functions as F

    age_us = F.lit(int(t_ref_us)) - F.unix_micros("ts")
    weight = F.exp(-age_us * F.lit(_rate_per_us(half_life_s)))
    return _before(rows, t_ref_us).groupBy("key", "group").agg(F.sum(weight).alias("value"),
                                                              F.count(F.lit(1)).alias("n"))


def decay_pandas(pdf: pd.DataFrame, t_ref_us: int, half_life_s: float) -> pd.DataFrame:
    """Reference implementation in plain pandas: any row order, ``ts`` as UTC datetimes."""
    weights = np.exp(-(t_ref_us - _pandas_micros(pdf["ts"])).astype(np.float64) * _rate_per_us(half_life_s))
    frame = pd.DataFrame({"key": pdf["key"].to_numpy(np.int64), "group": pdf["group"], "w": weights})
    out = frame.groupby(["key", "group"], sort=False).agg(value=("w", "sum"), n=("w", "size"))
    return out.reset_index().astype({"key": "int64", "n": "int64"})


def _pandas_micros(ts: pd.Series) -> np.ndarray:
    stamps = pd.to_datetime(ts, utc=True)
    return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)


def _per_partition(prepared: DataFrame, schema: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> DataFrame:
    """``fn`` over each partition's rows as one pandas frame, through ``mapInPandas``."""

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        freeze_heap_once()
        parts = [f for f in frames if len(f)]
        if parts:
            yield fn(pd.concat(parts, ignore_index=True))

    return prepared.mapInPandas(run, schema)


def decay_pandas_partitions(prepared: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """The pandas reference run per partition through ``mapInPandas``."""
    t_ref, half_life = int(t_ref_us), float(half_life_s)
    return _per_partition(prepared, DECAY_SCHEMA, lambda pdf: decay_pandas(pdf, t_ref, half_life))


# -- sessions -------------------------------------------------------------------------------------------

@njit(nogil=True)
def session_stats(starts: np.ndarray, t_us: np.ndarray,
                  gap_us: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per key: ``(first_row, sessions, events, duration_us, longest_us)`` over rows grouped by key and
    ordered by time within each key (``starts`` marks each key's first row, :func:`key_starts`).

    A gap longer than ``gap_us`` between two consecutive rows of a key starts a new session.
    """
    n = t_us.shape[0]
    n_keys = 0
    for i in range(n):
        if starts[i]:
            n_keys += 1
    first = np.empty(n_keys, np.int64)
    sessions = np.zeros(n_keys, np.int64)
    events = np.zeros(n_keys, np.int64)
    duration = np.zeros(n_keys, np.int64)
    longest = np.zeros(n_keys, np.int64)
    k = -1
    begin = 0
    for i in range(n):
        t = t_us[i]
        if starts[i] or t - t_us[i - 1] > gap_us:
            if starts[i]:
                k += 1
                first[k] = i
            sessions[k] += 1
            begin = t
        events[k] += 1
        if i + 1 == n or starts[i + 1] or t_us[i + 1] - t > gap_us:  # the session ends at row i
            length = t - begin
            duration[k] += length
            if length > longest[k]:
                longest[k] = length
    return first, sessions, events, duration, longest


def sessions_schema(key_fields: str) -> str:
    """The DDL schema of a sessions output: ``key_fields`` (e.g. ``"key long"``) then :data:`SESSION_FIELDS`."""
    return ", ".join([key_fields, *(f"{name} long" for name in SESSION_FIELDS)])


def _sessions_of_table(table: pa.Table, starts: np.ndarray, keys: Sequence[str], gap_us: int) -> pa.RecordBatch:
    first, *stats = session_stats(starts, _micros_of(table, "ts"), gap_us)
    index = pa.array(first)
    arrays = [table.column(k).take(index).combine_chunks() for k in keys]
    return pa.RecordBatch.from_arrays([*arrays, *(pa.array(s, pa.int64()) for s in stats)],
                                      names=[*keys, *SESSION_FIELDS])


def sessions_batches(batches: Iterator[pa.RecordBatch], keys: Sequence[str],
                     gap_us: int) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: batches of ``(*keys, ts)`` grouped by ``keys``, ordered by ``ts`` within a key
    -> one row per key: ``(*keys, sessions, events, duration_us, longest_us)``."""
    keys, gap = list(keys), _gap(gap_us)
    return _map_keyed(batches, keys, [*keys, "ts"], "sessions",
                      lambda table, starts: _sessions_of_table(table, starts, keys, gap))


def _gap(gap_us: int) -> int:
    if not gap_us >= 0:
        raise ValueError(f"the session gap must not be negative, got {gap_us} us")
    return int(gap_us)


def sessions_numba(prepared: DataFrame, keys: Sequence[str], gap_us: int) -> DataFrame:
    """Sessions with the numba kernel through ``mapInArrow``; ``prepared`` holds ``(*keys, ts)`` from
    :func:`prepare_keyed` with ``order=["ts"]``."""
    keys, gap = list(keys), _gap(gap_us)
    fields = ", ".join(f"`{k}` {prepared.schema[k].dataType.simpleString()}" for k in keys)
    return prepared.mapInArrow(lambda it: sessions_batches(it, keys, gap), sessions_schema(fields))


def sessions_sql(rows: DataFrame, keys: Sequence[str], gap_us: int) -> DataFrame:
    """The same sessions in Spark SQL: a window per key ordered by time marks each row that opens a
    session (``lag``), a running sum numbers the sessions, then ``groupBy(keys, session)`` and
    ``groupBy(keys)``.  ``rows`` hold ``(*keys, ts)`` in any order."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys, gap = list(keys), _gap(gap_us)
    by_key = Window.partitionBy(*keys).orderBy("ts")  # rows from prepare_keyed(keys, ["ts"]) need no sort
    t = rows.select(*keys, "ts", F.unix_micros("ts").alias("_us"))
    prev = F.lag("_us").over(by_key)
    opens = F.when(prev.isNull() | (F.col("_us") - prev > F.lit(gap)), 1).otherwise(0)
    numbered = t.withColumn("_open", opens).withColumn(
        "_s", F.sum("_open").over(by_key.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    per_session = numbered.groupBy(*keys, "_s").agg(F.count(F.lit(1)).alias("_n"),
                                                    (F.max("_us") - F.min("_us")).alias("_d"))
    return per_session.groupBy(*keys).agg(F.count(F.lit(1)).alias("sessions"), F.sum("_n").alias("events"),
                                          F.sum("_d").alias("duration_us"), F.max("_d").alias("longest_us"))


def sessions_pandas(pdf: pd.DataFrame, keys: Sequence[str], gap_us: int) -> pd.DataFrame:
    """Reference implementation in plain pandas: ``(*keys, ts)`` in any order, ``ts`` as UTC datetimes."""
    keys, gap = list(keys), _gap(gap_us)
    frame = pdf[keys].copy()
    frame["_us"] = _pandas_micros(pdf["ts"])
    frame = frame.sort_values([*keys, "_us"], kind="stable").reset_index(drop=True)
    new_key = (frame[keys] != frame[keys].shift()).any(axis=1)
    frame["_s"] = (new_key | (frame["_us"].diff() > gap)).cumsum()
    per_session = frame.groupby([*keys, "_s"], sort=False).agg(_n=("_us", "size"), _lo=("_us", "min"),
                                                              _hi=("_us", "max"))
    per_session["_d"] = per_session["_hi"] - per_session["_lo"]
    out = per_session.groupby(level=keys, sort=False).agg(sessions=("_n", "size"), events=("_n", "sum"),
                                                         duration_us=("_d", "sum"), longest_us=("_d", "max"))
    return out.reset_index().astype({name: "int64" for name in SESSION_FIELDS})


def sessions_pandas_partitions(prepared: DataFrame, keys: Sequence[str], gap_us: int) -> DataFrame:
    """The pandas reference run per partition through ``mapInPandas`` (input grouped by ``keys``)."""
    keys, gap = list(keys), _gap(gap_us)
    fields = ", ".join(f"`{k}` {prepared.schema[k].dataType.simpleString()}" for k in keys)
    return _per_partition(prepared, sessions_schema(fields), lambda pdf: sessions_pandas(pdf, keys, gap))
