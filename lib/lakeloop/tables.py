"""Delta tables on Spark, with or without the JVM connector.

delta-rs (``deltalake``) owns the transaction log; Spark's native parquet reader and writer move
the data.  Where the session has delta-spark loaded (``./setup.sh jvm``, ``delta.engine``), ``read`` and
``write`` go through it instead, with the same arguments (:mod:`lakeloop.delta.engine`).  A bridge
write stages parquet files in a uniquely named folder under the table root and the driver commits
them with their partition values and footer statistics; a read resolves the snapshot's file list with delta-rs
and hands it to ``spark.read.parquet``.  See ``docs/tables.md``.

>>> from lakeloop import tables  # doctest: +SKIP
>>> tables.write(df, "/data/silver/events", mode="overwrite", partition_by=["dt"],
...              replace_where="dt = '2026-11-01'")  # doctest: +SKIP
>>> tables.read(spark, "/data/silver/events", where="dt = '2026-11-01'")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lakeloop.delta.engine import engine_of, read, write
from lakeloop.delta.log import (
    ConcurrentWriteError,
    DeltaError,
    ReplaceWhereViolation,
    SchemaMismatchError,
    UnsupportedFeatureError,
    load_table,
    locate,
)
from lakeloop.delta.maintain import MergeResult, history, merge, optimize, restore, vacuum
from lakeloop.delta.write import WriteResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

__all__ = ["read", "write", "engine_of", "exists", "version", "merge", "history", "optimize", "vacuum", "restore",
           "read_stream", "stream_to", "WriteResult", "MergeResult", "DeltaError",
           "SchemaMismatchError", "ReplaceWhereViolation", "ConcurrentWriteError", "UnsupportedFeatureError"]


def exists(uri: str | os.PathLike[str], *, storage_options: dict[str, str] | None = None) -> bool:
    """Whether ``uri`` holds a Delta table."""
    from deltalake import DeltaTable

    loc = locate(uri, storage_options)
    return DeltaTable.is_deltatable(loc.delta, loc.storage_options or None)


def version(uri: str | os.PathLike[str], *, storage_options: dict[str, str] | None = None) -> int | None:
    """The latest version of the table at ``uri``; None when there is no table."""
    table = load_table(locate(uri, storage_options))
    return None if table is None else table.version()


def read_stream(spark: SparkSession, uri: str, **kwargs: Any) -> DataFrame:
    """A streaming DataFrame of rows appended to the table (``lakeloop_delta`` source); see
    :func:`lakeloop.delta.stream.read_stream`.  Imported lazily: Spark 3.5 has no Python data sources."""
    from lakeloop.delta.stream import read_stream as _read_stream

    return _read_stream(spark, uri, **kwargs)


def stream_to(df: DataFrame, uri: str, checkpoint: str, **kwargs: Any) -> StreamingQuery:
    """Write a streaming frame to a table exactly once per row (txn = query id, batch id); see
    :func:`lakeloop.delta.stream.stream_to`."""
    from lakeloop.delta.stream import stream_to as _stream_to

    return _stream_to(df, uri, checkpoint, **kwargs)
