"""File sizes of a write: aim each partition's files at ``delta.target_file_size``.

Spark writes one file per task and partition value it holds, so the number of files follows the frame's
partitioning, not the data's size: a daily partition of a few thousand rows came out as 4 files (one per
shuffle partition), a range of 365 dates as 4 x 365.  :func:`sized` repartitions a frame before a write by
an estimate of its size: the rows of each partition value (known to the caller: it has counted them) times
the bytes a row takes in the table's parquet files (:func:`row_bytes`, from the Delta log's file sizes and
record counts).  A partition value whose rows fit the target is written as one file; a larger one is split
into ``ceil(bytes / target)`` files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from lakeloop.lake import Lake

__all__ = ["row_bytes", "files_for", "sized"]

# bytes per row assumed for a table with no files yet (about a dozen short columns, compressed)
DEFAULT_ROW_BYTES = 64.0


def row_bytes(lake: Lake, table: str, default: float = DEFAULT_ROW_BYTES) -> float:
    """Average parquet bytes per row of ``table``'s latest snapshot (from the log: no data is read);
    ``default`` when the table has no files or does not exist."""
    import pyarrow as pa

    from lakeloop.delta.log import load_table, locate

    snapshot = load_table(locate(lake.uri(table), lake.storage_options))
    if snapshot is None:
        return default
    actions = pa.table(snapshot.get_add_actions(flatten=True))
    if actions.num_rows == 0 or "num_records" not in actions.column_names:
        return default
    rows = sum(n for n in actions.column("num_records").to_pylist() if n)
    size = sum(actions.column("size_bytes").to_pylist())
    return size / rows if rows else default


def files_for(rows: int, bytes_per_row: float, target: int) -> int:
    """Files for ``rows`` rows of ``bytes_per_row`` bytes each, none above ``target`` bytes (at least 1)."""
    return max(1, math.ceil(rows * bytes_per_row / max(target, 1)))


def sized(df: DataFrame, rows: Mapping[str, int], bytes_per_row: float, target: int, column: str = "dt",
          ) -> DataFrame:
    """``df`` repartitioned so that a write partitioned by ``column`` makes about ``target``-byte files.

    ``rows`` gives the rows of each value of ``column`` in ``df``.  Values that fit the target are
    hashed whole to a task (one file each); the rows of a larger value are spread over
    :func:`files_for` tasks by a hash of the whole row, so its files are near the target.
    """
    from pyspark.sql import functions as F

    files = {v: files_for(n, bytes_per_row, target) for v, n in rows.items() if n}
    total = sum(files.values())
    if len(files) <= 1:  # a shuffle, not coalesce: the work before the write keeps its parallelism
        return df.repartition(max(total, 1))
    if all(n == 1 for n in files.values()):
        parallel = df.sparkSession.sparkContext.defaultParallelism
        return df.repartition(min(len(files), max(parallel, 1)), F.col(column))
    split = {v: n for v, n in files.items() if n > 1}
    ways = F.element_at(F.create_map(*[F.lit(x) for kv in split.items() for x in kv]), F.col(column))
    hashable = [F.col(f"`{f.name}`") for f in df.schema.fields if "map<" not in f.dataType.simpleString()]
    salt = F.pmod(F.xxhash64(*hashable), F.coalesce(ways, F.lit(1)))
    # by range, not by hash: each (value, salt) group of a large value weighs about a target file, so the
    # range bounds give it a task of its own (a hash could put two in one task: one file of twice the size)
    return df.repartitionByRange(total, F.col(column), salt)
