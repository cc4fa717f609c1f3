"""Structured Streaming over Delta tables: the ``lakeloop_delta`` source and an exactly-once sink.

Source: a Python data source (``spark.readStream.format("lakeloop_delta")``).  Its offset is a
table version; a micro-batch ``(start, end]`` reads the files added with ``dataChange`` by
commits ``start+1 .. end`` (or, for a query started without ``startingVersion``, the whole snapshot
of the first version it sees, then every later commit).  Files compacted by OPTIMIZE
(``dataChange=false``) are not read twice.  A commit that deletes or rewrites rows fails the
query unless ``ignoreChanges`` is set, as in delta-spark.

Sink: ``foreachBatch`` calling :func:`lakeloop.delta.write.write` with
``txn=(query id, batch id)``.  The query id is stored in the checkpoint, so a query killed after
committing a batch but before checkpointing it replays the batch and the replay is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery
    from pyspark.sql.types import StructType

__all__ = ["FORMAT", "DeltaStreamSource", "register", "read_stream", "stream_to", "query_app_id"]

FORMAT = "lakeloop_delta"


def _lower(options: Any) -> dict[str, str]:
    """Spark passes data source options case-insensitively (keys may arrive lower-cased)."""
    return {str(k).lower(): v for k, v in options.items()}


def _location(options: dict[str, str]) -> Any:
    from lakeloop.delta.log import locate

    options = _lower(options)
    path = options.get("path")
    if not path:
        raise ValueError(f"{FORMAT}: option 'path' (the table URI) is required")
    storage = json.loads(options["storage_options"]) if options.get("storage_options") else None
    return locate(path, storage)


class _FilePartition(InputPartition):
    def __init__(self, path: str, partition_values: dict[str, str | None]) -> None:
        super().__init__(path)
        self.path = path
        self.partition_values = partition_values


class _DeltaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str], schema: StructType) -> None:
        self.options = _lower(options)
        self.schema = schema
        self.ignore_changes = str(self.options.get("ignorechanges", "false")).lower() == "true"

    def _table(self, version: int | None = None) -> Any:
        from lakeloop.delta.log import check_readable, open_table

        loc = _location(self.options)
        table = open_table(loc, version)
        check_readable(table, loc)
        return loc, table

    def initialOffset(self) -> dict:
        start = self.options.get("startingversion")
        if start is None:
            return {"version": -1, "snapshot": True}
        return {"version": int(start) - 1}

    def latestOffset(self, start: dict | None = None, limit: Any = None) -> dict:
        _, table = self._table()
        latest = table.version()
        if start is not None and latest <= int(start["version"]):
            return start  # nothing new: keep the start offset as it is (snapshot marker included)
        return {"version": latest}

    def partitions(self, start: dict, end: dict) -> Sequence[InputPartition]:
        first, last = int(start["version"]), int(end["version"])
        if last <= first:
            return []
        loc, _ = self._table()
        if start.get("snapshot"):
            return self._snapshot(loc, last)
        return [p for v in range(first + 1, last + 1) for p in self._added(loc, v)]

    def _snapshot(self, loc: Any, version: int) -> list[InputPartition]:
        from lakeloop.delta.log import open_table

        table = open_table(loc, version)
        parts = list(table.metadata().partition_columns)
        from urllib.parse import unquote

        import pyarrow as pa

        from lakeloop.delta.write import partition_string

        actions = pa.table(table.get_add_actions(flatten=False)).to_pylist()
        # typed values from delta-rs; the reader casts them again, so keep Delta's string form
        return [_FilePartition(loc.fs_join(unquote(a["path"])),
                               {c: partition_string((a.get("partition") or {}).get(c)) for c in parts})
                for a in actions]

    def _added(self, loc: Any, version: int) -> list[InputPartition]:
        from urllib.parse import unquote

        from lakeloop.delta.log import DeltaError, commit_actions

        out = []
        for action in commit_actions(loc, version):
            if "add" in action and action["add"].get("dataChange", True):
                add = action["add"]
                out.append(_FilePartition(loc.fs_join(unquote(add["path"])), add.get("partitionValues") or {}))
            elif "remove" in action and action["remove"].get("dataChange", True) and not self.ignore_changes:
                raise DeltaError(f"{loc.delta}: version {version} deleted or rewrote rows; a streaming source "
                                 "reads appends only (set option ignoreChanges=true to skip such commits)")
        return out

    def read(self, partition: InputPartition) -> Iterator[Any]:
        return _read_file(_location(self.options), partition, self.schema)

    def commit(self, end: dict) -> None:
        pass


def _read_file(loc: Any, partition: Any, schema: StructType) -> Iterator[Any]:
    """The file's rows as Arrow batches in the table schema (partition columns from the log)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import to_arrow_schema

    target = to_arrow_schema(schema, timezone="UTC")
    table = pq.read_table(partition.path, filesystem=loc.fs)
    columns = []
    for field in target:
        if field.name in partition.partition_values:
            raw = pa.array([partition.partition_values[field.name]] * table.num_rows, pa.string())
            columns.append(_cast_partition(raw, field.type))
        elif field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:  # a column added after this file was written
            columns.append(pa.nulls(table.num_rows, field.type))
    yield from pa.Table.from_arrays(columns, schema=target).to_batches()


def _cast_partition(raw: Any, arrow_type: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(arrow_type):
        # Delta writes "2026-11-01 10:00:00[.ffffff]" (UTC) for timestamp partitions
        text = pc.replace_substring_regex(raw, r"Z$", "")
        parsed = pc.strptime(pc.utf8_slice_codeunits(text, 0, 19), "%Y-%m-%d %H:%M:%S", "us")
        return parsed.cast(pa.timestamp("us", "UTC")).cast(arrow_type)
    if pa.types.is_boolean(arrow_type):
        return pc.equal(pc.utf8_lower(raw), "true")
    return raw.cast(arrow_type)


class DeltaStreamSource(DataSource):
    """``spark.readStream.format("lakeloop_delta").option("path", uri)``; options: ``startingVersion``,
    ``ignoreChanges``, ``storage_options`` (JSON)."""

    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        from lakeloop.delta.log import open_table, spark_schema

        return spark_schema(open_table(_location(dict(self.options))))

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return _DeltaStreamReader(dict(self.options), schema)


def register(spark: SparkSession) -> None:
    """Make ``lakeloop_delta`` available to ``spark.readStream.format``."""
    spark.dataSource.register(DeltaStreamSource)


def read_stream(spark: SparkSession, uri: str, *, starting_version: int | None = None, ignore_changes: bool = False,
                storage_options: dict[str, str] | None = None) -> DataFrame:
    """A streaming DataFrame of the rows appended to the table at ``uri``."""
    from lakeloop.delta.log import locate

    register(spark)
    loc = locate(uri, storage_options)
    reader = spark.readStream.format(FORMAT).option("path", loc.delta)
    if loc.storage_options:
        reader = reader.option("storage_options", json.dumps(loc.storage_options))
    if starting_version is not None:
        reader = reader.option("startingVersion", str(int(starting_version)))
    if ignore_changes:
        reader = reader.option("ignoreChanges", "true")
    return reader.load()


def query_app_id(checkpoint: str, storage_options: dict[str, str] | None = None) -> str:
    """The transaction app id of the query checkpointed at ``checkpoint``: its persistent query id."""
    from lakeloop.delta.log import _read_text, locate

    text = _read_text(locate(checkpoint, storage_options), "metadata")
    if text is None:
        raise FileNotFoundError(f"{checkpoint}/metadata: the query has not started")
    return "lakeloop-stream-" + json.loads(text.splitlines()[0])["id"]


class _BatchWriter:
    """foreachBatch body: one idempotent Delta write per micro-batch."""

    def __init__(self, uri: str, checkpoint: str, partition_by: list[str] | None, merge_schema: bool,
                 storage_options: dict[str, str] | None) -> None:
        self.uri, self.checkpoint, self.partition_by = uri, checkpoint, partition_by
        self.merge_schema, self.storage_options = merge_schema, storage_options
        self._app_id: str | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from lakeloop.delta.write import write

        if self._app_id is None:
            self._app_id = query_app_id(self.checkpoint, self.storage_options)
        write(batch, self.uri, partition_by=self.partition_by, txn=(self._app_id, int(batch_id)),
              merge_schema=self.merge_schema, storage_options=self.storage_options,
              commit_metadata={"lakeloop.streamBatch": str(batch_id)})


def stream_to(df: DataFrame, uri: str, checkpoint: str, *, trigger: str | dict[str, Any] = "availableNow",
              partition_by: list[str] | None = None, query_name: str | None = None, merge_schema: bool = False,
              storage_options: dict[str, str] | None = None) -> StreamingQuery:
    """Start writing the streaming ``df`` to the Delta table at ``uri``, exactly once per row.

    Parameters
    ----------
    trigger : str or dict
        ``"availableNow"``, ``"once"``, ``"10 seconds"`` (processing time) or keyword arguments of
        :meth:`DataStreamWriter.trigger`, e.g. ``{"processingTime": "1 minute"}``.
    checkpoint : str
        Checkpoint location; keep it to resume: it holds the query id the table's txn records use.

    Returns
    -------
    :class:`StreamingQuery`
    """
    writer = (df.writeStream.foreachBatch(_BatchWriter(uri, checkpoint, partition_by, merge_schema, storage_options))
              .option("checkpointLocation", checkpoint))
    if query_name:
        writer = writer.queryName(query_name)
    if isinstance(trigger, dict):
        writer = writer.trigger(**trigger)
    elif trigger == "availableNow":
        writer = writer.trigger(availableNow=True)
    elif trigger == "once":
        writer = writer.trigger(once=True)
    else:
        writer = writer.trigger(processingTime=trigger)
    return writer.start()
