"""Time-decayed per-user category affinity: a numba kernel run through ``mapInArrow``.

The affinity of user ``u`` for category ``c`` as of ``t_ref`` is

    sum over u's events e in c with e.ts < t_ref of 2 ** (-(t_ref - e.ts) / half_life)

that is ``exp(-(t_ref - t) / tau)`` with ``tau = half_life / ln 2``: an event one half-life old
weighs 0.5.  Input rows must be grouped by user inside each partition (``repartition(user)`` then
``sortWithinPartitions(user)``); the kernel makes one pass over a batch, accumulating the categories
of the current user in a small array indexed by the batch's dictionary code of the category.

:func:`affinity_pandas` is the plain pandas reference the kernel is tested against.
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

__all__ = ["AFFINITY_SCHEMA", "decay_sums", "affinity_batches", "affinity_numba", "affinity_pandas",
           "affinity_pandas_partitions", "prepare_affinity_input"]

#: Output of every affinity implementation: one row per (user, category) seen before ``t_ref``.
AFFINITY_SCHEMA = "user_id long, category string, affinity double, n long"

_MICROS = 1_000_000


@njit(nogil=True)  # no cache=True: the library may run from a zip (--py-files)
def decay_sums(user: np.ndarray, code: np.ndarray, t_us: np.ndarray, n_codes: int, t_ref_us: int,
               rate_per_us: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (user, code) sums of ``exp(-(t_ref - t) * rate)`` and counts over rows grouped by user.

    Returns ``(first_row, code, sum, count)`` arrays, one entry per group, groups in order of
    first appearance inside each user.
    """
    n = user.shape[0]
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
        if i == n or (i > 0 and user[i] != user[i - 1]):
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


def _affinity_of_table(table: pa.Table, t_ref_us: int, rate_per_us: float) -> pa.RecordBatch:
    """Run the kernel over one table whose rows are grouped by user."""
    table = table.combine_chunks()
    categories = pc.dictionary_encode(table.column("category")).combine_chunks()
    users = table.column("user_id").to_numpy()
    t_us = table.column("ts").cast(pa.int64()).to_numpy()
    codes = categories.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    rows, out_codes, sums, counts = decay_sums(users, codes, t_us, max(len(categories.dictionary), 1),
                                               t_ref_us, rate_per_us)
    return pa.RecordBatch.from_arrays(
        [pa.array(users[rows], pa.int64()), categories.dictionary.take(pa.array(out_codes)),
         pa.array(sums, pa.float64()), pa.array(counts, pa.int64())],
        names=["user_id", "category", "affinity", "n"])


def affinity_batches(batches: Iterator[pa.RecordBatch], t_ref_us: int,
                     half_life_s: float) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: batches of ``(user_id, category, ts)`` grouped by user -> affinities.

    A user whose rows straddle a batch boundary is carried over to the next batch, so every
    (user, category) pair comes out exactly once per partition.
    """
    rate = _rate_per_us(half_life_s)
    carry: pa.Table | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch]).select(["user_id", "category", "ts"])
        nulls = [c for c in table.column_names if table.column(c).null_count]
        if nulls:
            raise ValueError(f"affinity input has nulls in {nulls}: name unknown categories before the kernel")
        if carry is not None:
            table = pa.concat_tables([carry, table])
        users = table.column("user_id").to_numpy()
        others = np.flatnonzero(users != users[-1])
        if others.size == 0:  # one user so far: it may go on in the next batch
            carry = table
            continue
        cut = int(others[-1]) + 1  # first row of the last user
        carry = table.slice(cut)
        yield _affinity_of_table(table.slice(0, cut), t_ref_us, rate)
    if carry is not None and carry.num_rows:
        yield _affinity_of_table(carry, t_ref_us, rate)


def prepare_affinity_input(events: DataFrame, t_ref_us: int, num_partitions: int | None = None) -> DataFrame:
    """``(user_id, category, ts)`` rows strictly before ``t_ref``, grouped by user in each partition.

    ``category`` must already be non-null (callers name unknown categories explicitly).
    """
    from pyspark.sql import functions as F

    df = events.select("user_id", "category", "ts").where(
        F.col("ts") < F.timestamp_micros(F.lit(t_ref_us)))
    df = df.repartition(num_partitions, "user_id") if num_partitions else df.repartition("user_id")
    return df.sortWithinPartitions("user_id")


def affinity_numba(prepared: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """Affinities with the numba kernel through ``mapInArrow`` (input from :func:`prepare_affinity_input`)."""
    t_ref, half_life = int(t_ref_us), float(half_life_s)
    return prepared.mapInArrow(lambda it: affinity_batches(it, t_ref, half_life), AFFINITY_SCHEMA)


def affinity_pandas(pdf: pd.DataFrame, t_ref_us: int, half_life_s: float) -> pd.DataFrame:
    """Reference implementation in plain pandas: any row order, ``ts`` as UTC datetimes."""
    ts = pd.to_datetime(pdf["ts"], utc=True)
    age_us = t_ref_us - (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    weights = np.exp(-age_us.to_numpy(np.float64) * _rate_per_us(half_life_s))
    frame = pd.DataFrame({"user_id": pdf["user_id"].to_numpy(np.int64), "category": pdf["category"],
                          "w": weights})
    out = frame.groupby(["user_id", "category"], sort=False).agg(affinity=("w", "sum"), n=("w", "size"))
    return out.reset_index().astype({"user_id": "int64", "n": "int64"})


def affinity_pandas_partitions(prepared: DataFrame, t_ref_us: int, half_life_s: float) -> DataFrame:
    """The pandas reference run per partition through ``mapInPandas``."""
    t_ref, half_life = int(t_ref_us), float(half_life_s)

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        parts = [f for f in frames if len(f)]
        if parts:
            yield affinity_pandas(pd.concat(parts, ignore_index=True), t_ref, half_life)

    return prepared.mapInPandas(run, AFFINITY_SCHEMA)
