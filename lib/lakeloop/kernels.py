"""Time-decayed sums per (key, group): a numba kernel run through ``mapInArrow``.

The decayed sum of key ``k`` (an entity) for group ``g`` (a value of a grouping column) as of
``t_ref`` is

    sum over k's rows r in g with r.ts < t_ref of 2 ** (-(t_ref - r.ts) / half_life)

that is ``exp(-(t_ref - t) / tau)`` with ``tau = half_life / ln 2``: a row one half-life old
weighs 0.5.  Input rows have the columns ``key`` (long), ``group`` (string) and ``ts`` and must be
grouped by key inside each partition (:func:`prepare_decay_input`); the kernel makes one pass
over a batch, accumulating the groups of the current key in a small array indexed by the batch's
dictionary code of the group.  :mod:`lakeloop.featuresets.decay` maps a feature set's columns
onto these names (``kind: decay, impl: numba``).

:func:`decay_pandas` is the plain pandas reference the kernel is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["DECAY_SCHEMA", "decay_sums", "decay_batches", "decay_numba", "decay_pandas", "decay_pandas_partitions",
           "prepare_decay_input"]

#: Output of every implementation: one row per (key, group) seen before ``t_ref``.
DECAY_SCHEMA = "key long, group string, value double, n long"

_MICROS = 1_000_000


@njit(nogil=True)  # no cache=True: the library may run from a zip (--py-files)
def decay_sums(key: np.ndarray, code: np.ndarray, t_us: np.ndarray, n_codes: int, t_ref_us: int,
               rate_per_us: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (key, code) sums of ``exp(-(t_ref - t) * rate)`` and counts over rows grouped by key.

    Returns ``(first_row, code, sum, count)`` arrays, one entry per group, groups in order of
    first appearance inside each key.
    """
    n = key.shape[0]
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
        if i == n or (i > 0 and key[i] != key[i - 1]):
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


def _decay_of_table(table: pa.Table, t_ref_us: int, rate_per_us: float) -> pa.RecordBatch:
    """Run the kernel over one table whose rows are grouped by key."""
    table = table.combine_chunks()
    groups = pc.dictionary_encode(table.column("group")).combine_chunks()
    keys = table.column("key").to_numpy()
    t_us = table.column("ts").cast(pa.int64()).to_numpy()
    codes = groups.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rows, out_codes, sums, counts = decay_sums(keys, codes, t_us, max(len(groups.dictionary), 1),
                                               t_ref_us, rate_per_us)
    return pa.RecordBatch.from_arrays(
        [pa.array(keys[rows], pa.int64()), groups.dictionary.take(pa.array(out_codes)),
         pa.array(sums, pa.float64()), pa.array(counts, pa.int64())],
        names=["key", "group", "value", "n"])


def decay_batches(batches: Iterator[pa.RecordBatch], t_ref_us: int,
                     half_life_s: float) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: batches of ``(key, group, ts)`` grouped by key -> decayed sums.

    A key whose rows straddle a batch boundary is carried over to the next batch, so every
    (key, group) pair comes out exactly once per partition.
    """
    rate = _rate_per_us(half_life_s)
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch]).select(["key", "group", "ts"])
        nulls = [c for c in table.column_names if table.column(c).null_count]
        if nulls:
            raise ValueError(f"decay input has nulls in {nulls}: give missing groups a value before the kernel")
        if carry is not None:
            table = pa.concat_tables([carry, table])
        keys = table.column("key").to_numpy()
        others = np.flatnonzero(keys != keys[-1])
        if others.size == 0:  # one key so far: it may go on in the next batch
            carry = table
            continue
        cut = int(others[-1]) + 1  # first row of the last key
        carry = table.slice(cut)
        yield _decay_of_table(table.slice(0, cut), t_ref_us, rate)
    if carry is not None and carry.num_rows:
        yield _decay_of_table(carry, t_ref_us, rate)


def prepare_decay_input(rows: DataFrame, t_ref_us: int, num_partitions: int | None = None) -> DataFrame:
    """``(key, group, ts)`` rows strictly before ``t_ref``, grouped by key in each partition.

    ``group`` must already be non-null (callers give missing groups a value explicitly).
    """
    from pyspark.sql import functions as F

    df = rows.select("key", "group", "ts").where(
        F.col("ts") < F.timestamp_micros(F.lit(t_ref_us)))
    df = df.repartition(num_partitions, "key") if num_partitions else df.repartition("key")
    return df.sortWithinPartitions("key")


def decay_numba(prepared: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """Decayed sums with the numba kernel through ``mapInArrow`` (input from :func:`prepare_decay_input`)."""
    t_ref, half_life = int(t_ref_us), float(half_life_s)
    return prepared.mapInArrow(lambda it: decay_batches(it, t_ref, half_life), DECAY_SCHEMA)


def decay_pandas(pdf: pd.DataFrame, t_ref_us: int, half_life_s: float) -> pd.DataFrame:
    """Reference implementation in plain pandas: any row order, ``ts`` as UTC datetimes."""
    ts = pd.to_datetime(pdf["ts"], utc=True)
    age_us = t_ref_us - (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    weights = np.exp(-age_us.to_numpy(np.float64) * _rate_per_us(half_life_s))
    frame = pd.DataFrame({"key": pdf["key"].to_numpy(np.int64), "group": pdf["group"], "w": weights})
    out = frame.groupby(["key", "group"], sort=False).agg(value=("w", "sum"), n=("w", "size"))
    return out.reset_index().astype({"key": "int64", "n": "int64"})


def decay_pandas_partitions(prepared: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """The pandas reference run per partition through ``mapInPandas``."""
    t_ref, half_life = int(t_ref_us), float(half_life_s)

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        parts = [f for f in frames if len(f)]
        if parts:
            yield decay_pandas(pd.concat(parts, ignore_index=True), t_ref, half_life)

    return prepared.mapInPandas(run, DECAY_SCHEMA)
