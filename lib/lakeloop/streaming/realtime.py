"""Real-time views: event-time window counts per entity key, with a watermark.

The realtime query reads the arriving lines (landing files or Kafka, as the bronze query does, with
its own checkpoint), parses them with the curate expressions and keeps the valid events.  What it
counts is the app's conf (:class:`~lakeloop.streaming.realtime_spec.RealtimeSpec`, ``stream.realtime.*``):
each event counts once for each entity (an integer key column of the events) in the tumbling window
``stream.window`` of its event time: all its events and, per count column, those of one event type;
lines repeating a primary key within the watermark count once.  An event whose window ended more
than ``stream.watermark`` before the latest event time seen is dropped by Spark and counted in the
query progress (``numRowsDroppedByWatermark``).

Each micro-batch's updated windows are appended to ``stream.realtime_table`` (transaction
``(query id, batch id)``: an update log, one row per window, entity and key and batch; the latest
``_stream_batch`` of a window is its current count) and the newest window of every key is written
to the serving store's real-time view (``put_realtime`` with ``stream.realtime_ttl_seconds``): the
lookup entity's views under the bare key, so that ``lookup(key)`` merges them with the batch values,
the others under ``<entity>:<key>``.  An update of an older window never replaces a newer one in the
store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeloop.curate import classify, cleanse, parse
from lakeloop.delta.stream import query_app_id
from lakeloop.lake import Lake
from lakeloop.serving import open_store
from lakeloop.streaming.realtime_spec import Group, RealtimeSpec

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.schemas import SourceSchema

__all__ = ["RealtimeSpec", "RealtimeStats", "RealtimeWriter", "supports_realtime", "valid_events", "group_values",
           "realtime_frame", "table_schema"]

log = logging.getLogger("lakeloop.stream")

_ISO = "yyyy-MM-dd'T'HH:mm:ss'Z'"
_GROUP, _TYPE = "_group", "_type"  # internal column names while counting


def _window_fields(spec: RealtimeSpec, times: T.DataType) -> list[T.StructField]:
    fields = [T.StructField("window_start", times), T.StructField("window_end", times),
              T.StructField("entity", T.StringType()), T.StructField("key", T.LongType()),
              T.StructField("events", T.LongType())]
    fields += [T.StructField(name, T.LongType()) for name in spec.counts]
    if spec.group is not None:
        fields.append(T.StructField(spec.group.field, T.ArrayType(T.StringType())))
    return fields + [T.StructField("updated_at", times), T.StructField("_stream_batch", T.LongType())]


def table_schema(spec: RealtimeSpec) -> T.StructType:
    """Columns of ``stream.realtime_table``: window, entity, key, the counts, the group field, batch."""
    return T.StructType(_window_fields(spec, T.TimestampType()))


def supports_realtime(schema: SourceSchema, spec: RealtimeSpec) -> bool:
    """Whether the source has an event time and every column the view reads (``spec.columns``; an app
    with no ``stream.realtime.entities`` has no real-time view); not a CSV source with a header line (its
    lines cannot be parsed without their file's line 1)."""
    if schema.format == "csv" and schema.csv.header:
        return False
    return bool(spec.entities) and bool(schema.event_time) and all(c in schema.names for c in spec.columns)


def valid_events(lines: DataFrame, schema: SourceSchema) -> DataFrame:
    """The typed columns of the raw lines (``value``) curate would accept (before de-duplication)."""
    curated = classify(cleanse(parse(lines, schema), schema), schema)
    return curated.where(F.col("reason").isNull()).select(*schema.names)


def group_values(spark: SparkSession, conf: Conf, group: Group | None) -> DataFrame | None:
    """``group.key -> group.column`` (as text, named ``_group``) from the latest ``dt`` partition holding each key of
    ``group.table``; ``None`` without a group or when the table (or one of those columns) does not exist
    yet (the views then collect no values)."""
    if group is None:
        return None
    lake = Lake.from_conf(conf)
    uri = lake.uri(group.table)
    if not lake.exists(uri):
        return None
    rows = lake.read(spark, uri)
    if not {group.key, group.column, "dt"} <= set(rows.columns):
        return None
    value = F.col(group.column).cast("string")  # the views hold the group's values as text
    return rows.groupBy(group.key).agg(F.max_by(value, "dt").alias(_GROUP)).persist()


def realtime_frame(events: DataFrame, schema: SourceSchema, spec: RealtimeSpec, window: str, watermark: str,
                   groups: DataFrame | None = None) -> DataFrame:
    """Streaming counts per ``(window, entity, key)``, one row per entity of ``spec`` an event has."""
    ts = schema.event_time
    ev = events.withWatermark(ts, watermark)
    if schema.primary_key:
        # a line delivered twice (duplicate) counts once, as curate keeps one row per key
        ev = ev.dropDuplicatesWithinWatermark(list(schema.primary_key))
    ev = ev.select(ts, *spec.columns)
    if spec.group is not None:
        ev = ev.join(F.broadcast(groups), spec.group.key, "left") if groups is not None \
            else ev.withColumn(_GROUP, F.lit(None).cast("string"))
    per_entity = F.explode(F.array(*[
        F.struct(F.lit(name).alias("entity"), F.col(column).cast("long").alias("key"))
        for name, column in spec.entities.items()]))
    if spec.type_column:
        ev = ev.withColumn(_TYPE, F.col(spec.type_column))
    inner = [c for c in (_TYPE, _GROUP) if c in ev.columns]
    rows = ev.select(ts, *inner, per_entity.alias("e")).select(ts, *inner, "e.*")
    counts = [F.count("*").alias("events")] + [
        F.sum(F.when(F.col(_TYPE) == kind, 1).otherwise(0)).cast("long").alias(name)
        for name, kind in spec.counts.items()]
    if spec.group is not None:
        counts.append(F.collect_set(_GROUP).alias(spec.group.field))
    return rows.groupBy(F.window(ts, window).alias("window"), "entity", "key").agg(*counts)


@dataclass
class RealtimeStats:
    """What the realtime query wrote since it started."""

    batches: int = 0
    window_rows: int = 0
    keys_published: int = 0
    stale_skipped: int = 0  # updates of a window older than the one the store holds
    replayed_batches: int = 0


class RealtimeWriter:
    """``foreachBatch(writer)`` of the realtime query (output mode ``update``)."""

    def __init__(self, conf: Conf, checkpoint: str, spec: RealtimeSpec) -> None:
        self.conf, self.checkpoint, self.spec = conf, checkpoint, spec
        self.lake = Lake.from_conf(conf)
        self.uri = self.lake.uri(conf["stream.realtime_table"])
        self.ttl = conf.get("stream.realtime_ttl_seconds")
        self.stats = RealtimeStats()
        self._app_id: str | None = None
        self._store: Any = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self._app_id is None:
            self._app_id = query_app_id(self.checkpoint, self.lake.storage_options)
        group = self.spec.group
        values = [F.array_sort(F.filter(group.field, lambda c: c.isNotNull())).alias(group.field)] if group else []
        # collected once: the updated windows of one batch are few, and recomputing a stateful batch is not
        rows = batch.select(F.date_format("window.start", _ISO).alias("window_start"),
                            F.date_format("window.end", _ISO).alias("window_end"), "entity", "key", "events",
                            *self.spec.counts, *values,
                            F.date_format(F.current_timestamp(), _ISO).alias("updated_at")).collect()
        self.stats.batches += 1
        if not rows:
            return
        spark = batch.sparkSession
        collected = T.StructType(_window_fields(self.spec, T.StringType()))
        frame = spark.createDataFrame([tuple(r) + (int(batch_id),) for r in rows], collected)
        frame = frame.select(*[F.col(f.name).cast(f.dataType) for f in table_schema(self.spec).fields])
        written = self.lake.write(frame, self.uri, mode="append", txn=(self._app_id, int(batch_id)))
        if written.skipped:
            self.stats.replayed_batches += 1
        self.stats.window_rows += len(rows)
        self._publish(rows)
        log.info("realtime batch %d: %d window updates, %d keys published", batch_id, len(rows),
                 self.stats.keys_published)

    def _publish(self, rows: list[Any]) -> None:
        """Put the newest window of each key into the store's real-time view; re-publishing on a
        replayed batch writes the same values again."""
        newest: dict[tuple[str, int], Any] = {}
        for r in rows:
            k = (r["entity"], r["key"])
            if k not in newest or r["window_start"] > newest[k]["window_start"]:
                newest[k] = r
        store = self._open()
        fields = ("window_start", "window_end", "events", *self.spec.counts, "updated_at")
        items = []
        for (entity, key), r in newest.items():
            skey = self.spec.serving_key(entity, key)
            held = store.get_realtime(skey)
            if isinstance(held, dict) and str(held.get("window_start", "")) > r["window_start"]:
                self.stats.stale_skipped += 1
                continue
            value = {name: r[name] for name in fields}
            if self.spec.carries_group(entity):
                value[self.spec.group.field] = list(r[self.spec.group.field])
            items.append((skey, value))
        self.stats.keys_published += store.put_realtime(items, ttl=self.ttl)

    def _open(self) -> Any:
        if self._store is None:
            self._store = open_store(self.conf)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
