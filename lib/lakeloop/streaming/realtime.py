"""Real-time views: event-time window counts per item and per user, with a watermark.

The realtime query reads the arriving lines (landing files or Kafka, as the bronze query does, with
its own checkpoint), parses them with the curate expressions and keeps the valid events.  Each
event counts once for its item and once for its user in the tumbling window ``stream.window`` of
its event time; lines repeating a primary key within the watermark count once.  An event whose
window ended more than ``stream.watermark`` before the latest event time seen is dropped by Spark
and counted in the query progress (``numRowsDroppedByWatermark``).

Each micro-batch's updated windows are appended to ``stream.realtime_table`` (transaction
``(query id, batch id)``: an update log, one row per window, entity and key and batch; the latest
``_stream_batch`` of a window is its current count) and the newest window of every key is written
to the serving store's real-time view (``put_realtime`` with ``stream.realtime_ttl_seconds``):
users under their id, so that ``lookup(user_id)`` merges it with the batch recommendations, and items
under ``item:<id>``.  An update of an older window never replaces a newer one in the store.
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

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.schemas import SourceSchema

__all__ = ["REQUIRED", "COUNTS", "RealtimeStats", "RealtimeWriter", "supports_realtime", "valid_events",
           "item_categories", "realtime_frame", "serving_key"]

log = logging.getLogger("lakeloop.stream")

REQUIRED = ("item_id", "user_id", "type")
#: output column -> event type counted
COUNTS = {"views": "view", "clicks": "click", "carts": "add_to_cart", "purchases": "purchase"}
_ISO = "yyyy-MM-dd'T'HH:mm:ss'Z'"

TABLE_SCHEMA = T.StructType(
    [T.StructField("window_start", T.TimestampType()), T.StructField("window_end", T.TimestampType()),
     T.StructField("entity", T.StringType()), T.StructField("key", T.LongType()),
     T.StructField("events", T.LongType())]
    + [T.StructField(name, T.LongType()) for name in COUNTS]
    + [T.StructField("categories", T.ArrayType(T.StringType())), T.StructField("updated_at", T.TimestampType()),
       T.StructField("_stream_batch", T.LongType())])


def supports_realtime(schema: SourceSchema) -> bool:
    """Whether the source has an event time and the columns the views count (``events`` does);
    not a CSV source with a header line (its lines cannot be parsed without their file's line 1)."""
    if schema.format == "csv" and schema.csv.header:
        return False
    return bool(schema.event_time) and all(c in schema.names for c in REQUIRED)


def serving_key(entity: str, key: int) -> Any:
    """Key of the real-time view: a user id as it is (merged with the batch view by ``lookup``),
    ``item:<id>`` for an item."""
    return int(key) if entity == "user" else f"item:{int(key)}"


def valid_events(lines: DataFrame, schema: SourceSchema) -> DataFrame:
    """The typed columns of the raw lines (``value``) curate would accept (before de-duplication)."""
    curated = classify(cleanse(parse(lines, schema), schema), schema)
    return curated.where(F.col("reason").isNull()).select(*schema.names)


def item_categories(spark: SparkSession, conf: Conf) -> DataFrame | None:
    """``item_id -> category`` from the latest partition holding each item of ``stream.items_table``;
    ``None`` when the table does not exist yet (the user views then carry no categories)."""
    lake = Lake.from_conf(conf)
    uri = lake.uri(conf["stream.items_table"])
    if not lake.exists(uri):
        return None
    items = lake.read(spark, uri)
    if not {"item_id", "category", "dt"} <= set(items.columns):
        return None
    latest = items.groupBy("item_id").agg(F.max_by("category", "dt").alias("category"))
    return latest.persist()


def realtime_frame(events: DataFrame, schema: SourceSchema, window: str, watermark: str,
                   categories: DataFrame | None = None) -> DataFrame:
    """Streaming counts per ``(window, entity, key)``: entity ``item`` (key item_id) and ``user``."""
    ts = schema.event_time
    ev = events.withWatermark(ts, watermark)
    if schema.primary_key:
        # a line delivered twice (duplicate) counts once, as curate keeps one row per key
        ev = ev.dropDuplicatesWithinWatermark(list(schema.primary_key))
    ev = ev.select(ts, "item_id", "user_id", "type")
    if categories is not None:
        ev = ev.join(F.broadcast(categories), "item_id", "left")
    else:
        ev = ev.withColumn("category", F.lit(None).cast("string"))
    per_entity = F.explode(F.array(
        F.struct(F.lit("item").alias("entity"), F.col("item_id").cast("long").alias("key")),
        F.struct(F.lit("user").alias("entity"), F.col("user_id").cast("long").alias("key"))))
    rows = ev.select(ts, "type", "category", per_entity.alias("e")).select(ts, "type", "category", "e.*")
    counts = [F.count("*").alias("events")] + [
        F.sum(F.when(F.col("type") == kind, 1).otherwise(0)).cast("long").alias(name) for name, kind in COUNTS.items()]
    return (rows.groupBy(F.window(ts, window).alias("window"), "entity", "key")
            .agg(*counts, F.collect_set("category").alias("categories")))


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

    def __init__(self, conf: Conf, checkpoint: str) -> None:
        self.conf, self.checkpoint = conf, checkpoint
        self.lake = Lake.from_conf(conf)
        self.uri = self.lake.uri(conf["stream.realtime_table"])
        self.ttl = conf.get("stream.realtime_ttl_seconds")
        self.stats = RealtimeStats()
        self._app_id: str | None = None
        self._store: Any = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self._app_id is None:
            self._app_id = query_app_id(self.checkpoint, self.lake.storage_options)
        # collected once: the updated windows of one batch are few, and recomputing a stateful batch is not
        rows = batch.select(F.date_format("window.start", _ISO).alias("window_start"),
                            F.date_format("window.end", _ISO).alias("window_end"), "entity", "key", "events",
                            *COUNTS, F.array_sort(F.filter("categories", lambda c: c.isNotNull())).alias("categories"),
                            F.date_format(F.current_timestamp(), _ISO).alias("updated_at")).collect()
        self.stats.batches += 1
        if not rows:
            return
        spark = batch.sparkSession
        frame = spark.createDataFrame([tuple(r) + (int(batch_id),) for r in rows], _collected_schema())
        frame = frame.select(*[F.col(f.name).cast(f.dataType) for f in TABLE_SCHEMA.fields])
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
        items = []
        for (entity, key), r in newest.items():
            skey = serving_key(entity, key)
            held = store.get_realtime(skey)
            if isinstance(held, dict) and str(held.get("window_start", "")) > r["window_start"]:
                self.stats.stale_skipped += 1
                continue
            value = {name: r[name] for name in ("window_start", "window_end", "events", *COUNTS, "updated_at")}
            if entity == "user":
                value["categories"] = list(r["categories"])
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


def _collected_schema() -> T.StructType:
    strings = ("window_start", "window_end", "entity")
    fields = [T.StructField(n, T.StringType()) for n in strings] + [T.StructField("key", T.LongType()),
                                                                     T.StructField("events", T.LongType())]
    fields += [T.StructField(n, T.LongType()) for n in COUNTS]
    fields += [T.StructField("categories", T.ArrayType(T.StringType())), T.StructField("updated_at", T.StringType()),
               T.StructField("_stream_batch", T.LongType())]
    return T.StructType(fields)
