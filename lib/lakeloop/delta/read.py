"""Snapshot reads: the files of a Delta version read by Spark's native parquet reader."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import reduce
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from lakeloop.delta.files import HIVE_NULL
from lakeloop.delta.log import (
    FileEntry,
    TableLocation,
    check_readable,
    locate,
    open_table,
    snapshot_files,
    spark_schema,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

__all__ = ["read", "read_files"]

# Spark lists more than this many input paths with a distributed job; for a known file list
# a driver-side lookup is much cheaper (the parallel job costs ~1 s of scheduling).
_LISTING_THRESHOLD_KEY = "spark.sql.sources.parallelPartitionDiscovery.threshold"


def read(spark: SparkSession, uri: str, version: int | None = None, timestamp: dt.datetime | str | None = None,
         *, where: str | None = None, filters: list | None = None,
         storage_options: dict[str, str] | None = None) -> DataFrame:
    """Read a Delta table (latest version, or ``version`` / ``timestamp``) as a DataFrame.

    Parameters
    ----------
    spark : :class:`SparkSession`
    uri : str
        Local path, ``file://`` URI or object-store URI of the table root.
    version : int, optional
        Time travel to this table version.
    timestamp : :class:`datetime.datetime` or str, optional
        Time travel to the latest version committed at or before this UTC instant.
    where : str, optional
        SQL predicate: prunes files by partition values and file statistics, then filters rows.
    filters : list, optional
        delta-rs tuple filters, e.g. ``[("dt", "=", "2026-11-01")]``: prunes files, then filters rows.
    storage_options : dict, optional
        delta-rs storage options (:class:`lakeloop.lake.Lake` passes ``delta.storage_options``).

    Returns
    -------
    :class:`DataFrame`
        Columns in the table's schema order, partition columns with their logical types.
    """
    loc = locate(uri, storage_options)
    table = open_table(loc, version, timestamp)
    check_readable(table, loc)
    schema = spark_schema(table)
    partition_columns = list(table.metadata().partition_columns)
    predicate: Any = where if where is not None else filters
    entries = snapshot_files(table, partition_columns, predicate)
    frame = read_files(spark, loc, entries, schema, partition_columns)
    if filters is not None:
        frame = frame.where(_filters_to_sql(filters))
    if where is not None:
        frame = frame.where(where)
    return frame


def read_files(spark: SparkSession, loc: TableLocation, entries: Sequence[FileEntry], schema: StructType,
               partition_columns: Sequence[str]) -> DataFrame:
    """The rows of ``entries`` as one frame with ``schema`` (partition columns filled from the log)."""
    if not entries:
        return spark.createDataFrame([], schema)
    names = [f.name for f in schema.fields]
    if not partition_columns:
        return _parquet(spark, schema, [e.absolute(loc) for e in entries]).select(*names)
    types = {f.name: f.dataType for f in schema.fields}
    if all(_hive_layout_matches(e, types) for e in entries):
        frame = _parquet(spark, schema, [e.absolute(loc) for e in entries], base_path=loc.spark)
        return frame.select(*names)
    return _read_by_partition(spark, loc, entries, schema, partition_columns).select(*names)


@contextmanager
def _driver_side_listing(spark: SparkSession, n_paths: int) -> Iterator[None]:
    old = spark.conf.get(_LISTING_THRESHOLD_KEY)
    spark.conf.set(_LISTING_THRESHOLD_KEY, str(max(n_paths + 1, int(old or 32))))
    try:
        yield
    finally:
        spark.conf.set(_LISTING_THRESHOLD_KEY, old)


def _parquet(spark: SparkSession, schema: StructType, paths: list[str], base_path: str | None = None) -> DataFrame:
    reader = spark.read.schema(schema).option("__globPaths__", "false")
    if base_path is not None:
        reader = reader.option("basePath", base_path)
    with _driver_side_listing(spark, len(paths)):
        return reader.parquet(*paths)


def _typed(value: str | None, data_type: DataType) -> Any:
    """How Spark's partition discovery reads a path value of ``data_type`` (for the layout check)."""
    from pyspark.sql import types as T

    if value is None:
        return None
    if isinstance(data_type, T.StringType):
        return value
    if isinstance(data_type, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return int(value)
    if isinstance(data_type, T.DateType):
        return dt.date.fromisoformat(value)
    if isinstance(data_type, T.TimestampType):
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(data_type, T.BooleanType):
        return {"true": True, "false": False}[value.lower()]
    if isinstance(data_type, T.DecimalType):
        return decimal.Decimal(value)
    raise ValueError(f"no layout check for {data_type}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        if b.tzinfo is None:
            b = b.replace(tzinfo=dt.UTC)
        return a == b
    return a == b


def _hive_layout_matches(entry: FileEntry, types: dict[str, DataType]) -> bool:
    """True when Spark's partition discovery on the file's directories yields the log's values."""
    segments = entry.path.split("/")[:-1]
    wanted = dict(entry.partition_values)
    found: dict[str, str | None] = {}
    # Spark parses k=v segments upwards from the file until the first segment without "="
    for segment in reversed(segments):
        key, sep, value = segment.partition("=")
        if not sep:
            break
        raw = unquote(value)
        found[key] = None if raw == HIVE_NULL else raw
    if set(found) != set(wanted):
        return False
    try:
        return all(_same(_typed(found[k], types[k]), v) for k, v in wanted.items())
    except (ValueError, KeyError):
        return False


def _read_by_partition(spark: SparkSession, loc: TableLocation, entries: Sequence[FileEntry],
                       schema: StructType, partition_columns: Sequence[str]) -> DataFrame:
    """Files not laid out as ``k=v`` folders: one scan per partition, values added as literals."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructType

    data_schema = StructType([f for f in schema.fields if f.name not in partition_columns])
    types = {f.name: f.dataType for f in schema.fields}
    groups: dict[tuple, list[str]] = {}
    for e in entries:
        groups.setdefault(e.partition_values, []).append(e.absolute(loc))
    frames = []
    for values, paths in groups.items():
        frame = _parquet(spark, data_schema, paths)
        for name, value in values:
            frame = frame.withColumn(name, F.lit(value).cast(types[name]))
        frames.append(frame)
    return reduce(lambda a, b: a.unionByName(b), frames)


def _filters_to_sql(filters: list) -> str:
    """delta-rs tuple filters (conjunction or DNF) as a Spark SQL predicate."""
    groups = filters if filters and isinstance(filters[0], list) else [filters]

    def literal(v: Any) -> str:
        if isinstance(v, str):
            return "'" + v.replace("'", "\\'") + "'"
        if isinstance(v, (dt.datetime, dt.date)):
            return f"'{v.isoformat()}'"
        return str(v)

    def one(col: str, op: str, value: Any) -> str:
        if op.lower() in ("in", "not in"):
            return f"`{col}` {op.upper()} ({', '.join(literal(v) for v in value)})"
        return f"`{col}` {op} {literal(value)}"

    return " OR ".join("(" + " AND ".join(one(*f) for f in g) + ")" for g in groups)
