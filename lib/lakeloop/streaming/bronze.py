"""foreachBatch body of the bronze query: raw lines -> ``bronze.<source>`` exactly once.

Landing files share the batch ingest ledger (``ingest.ledger_table``): a micro-batch skips files the
ledger already holds (ingested by ``jobs/ingest.py`` or an earlier micro-batch) and records the files
it writes, so batch ingest skips them in turn.  Each micro-batch re-reads its new files with
:func:`lakeloop.ingest.read_lines`, which gives the same exact ``_line`` numbers as batch ingest.

Every table write of a micro-batch carries the transaction ``(query id, batch id)``: a batch replayed
after a crash re-commits nothing that was already committed (bronze, quarantine, ledger each on their
own), and files committed to bronze but missing from the ledger are recorded by the replay.
Malformed and invalid lines are classified with the curate expressions and written to
``silver.<source>_stream_quarantine`` with the reason codes of the batch layer.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakeloop import tables
from lakeloop.curate import classify, cleanse, parse, quarantine_frame
from lakeloop.delta.stream import query_app_id
from lakeloop.ingest import (
    LandingFile,
    bronze_schema,
    file_key,
    landing_dir,
    ledger_frame,
    ledger_uri,
    list_landing,
    read_ledger,
    read_lines,
)
from lakeloop.streaming.sources import StreamError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.schemas import SourceSchema

__all__ = ["BronzeStats", "BronzeWriter", "quarantine_table", "stream_quarantine"]

log = logging.getLogger("lakeloop.stream")

_DT = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/")


def quarantine_table(source: str) -> str:
    """Table of the lines the stream rejected: ``silver.<source>_stream_quarantine``.

    Not ``silver.<source>_quarantine``: curate overwrites that one per ``dt`` from all of bronze.
    """
    return f"silver.{source}_stream_quarantine"


def stream_quarantine(bronze: DataFrame, schema: SourceSchema) -> DataFrame:
    """The rejected lines of a bronze frame, with curate's reason codes (no ``duplicate``: the
    stream does not de-duplicate; curate does, over the whole day)."""
    return quarantine_frame(classify(cleanse(parse(bronze, schema), schema), schema))


@dataclass
class BronzeStats:
    """What the bronze query wrote since it started (counted on the driver)."""

    batches: int = 0
    files: int = 0
    rows: int = 0
    quarantine_rows: int = 0
    files_already_ingested: int = 0
    replayed_batches: int = 0  # bronze commit found already done (restart after a crash)
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)


class BronzeWriter:
    """``foreachBatch(writer)`` of the bronze query of one source."""

    def __init__(self, conf: Conf, schema: SourceSchema, checkpoint: str, *, files: bool) -> None:
        self.conf, self.schema, self.checkpoint, self.from_files = conf, schema, checkpoint, files
        self.bronze_uri = conf.table_uri(f"bronze.{schema.source}")
        self.quarantine_uri = conf.table_uri(quarantine_table(schema.source))
        self.stats = BronzeStats()
        self._app_id: str | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self._app_id is None:
            self._app_id = query_app_id(self.checkpoint)
        spark = batch.sparkSession
        at = dt.datetime.now(dt.UTC)
        tag = f"stream-{self._app_id[-12:]}-{batch_id}"
        ledger: DataFrame | None = None
        files = 0
        if self.from_files:
            found = self._new_files(spark, batch, tag, at)
            if found is None:
                return
            lines, ledger, files = found
        else:
            lines = batch
        bronze = lines.select(*[c for c in lines.columns if c != "dt"],
                              F.lit(at).cast("timestamp").alias("_ingested_at"), F.lit(tag).alias("_batch_id"),
                              F.col("dt")).select(*bronze_schema(self.schema).names).persist()
        try:
            txn = (self._app_id, int(batch_id))
            written = tables.write(bronze, self.bronze_uri, mode="append", partition_by=["dt"], txn=txn)
            rejected = stream_quarantine(bronze, self.schema).persist()
            try:
                by_reason = {r["reason"]: int(r["count"]) for r in rejected.groupBy("reason").count().collect()}
                tables.write(rejected, self.quarantine_uri, mode="append", partition_by=["dt"], txn=txn)
            finally:
                rejected.unpersist()
            if ledger is not None:
                tables.write(ledger, ledger_uri(self.conf), mode="append", txn=txn)
        finally:
            bronze.unpersist()
        self._count(written, by_reason, files)
        log.info("bronze.%s batch %d: %d rows (%s), quarantine %s", self.schema.source, batch_id, written.rows,
                 "replayed, already committed" if written.skipped else f"v{written.version}", by_reason or "none")

    def _count(self, written: tables.WriteResult, by_reason: dict[str, int], files: int) -> None:
        s = self.stats
        s.batches += 1
        if written.skipped:
            s.replayed_batches += 1
            return
        s.files += files
        s.rows += int(written.rows)
        s.quarantine_rows += sum(by_reason.values())
        for reason, n in by_reason.items():
            s.quarantine_by_reason[reason] = s.quarantine_by_reason.get(reason, 0) + n

    def _new_files(self, spark: SparkSession, batch: DataFrame, tag: str,
                   at: dt.datetime) -> tuple[DataFrame, DataFrame, int] | None:
        """Numbered lines (with ``dt``), ledger rows and number of the batch's files that no ledger
        row holds; ``None`` when there are none."""
        by_date: dict[str, list[str]] = defaultdict(list)
        for row in batch.select("_file").distinct().collect():
            key = file_key(row["_file"])
            match = _DT.search(key)
            if match is None:  # cannot happen with the dt=* glob, but never guess a partition
                raise StreamError(f"landing file {row['_file']} is not under a dt=YYYY-MM-DD folder")
            by_date[match.group(1)].append(key)
        new: list[tuple[str, LandingFile]] = []
        for date, keys in sorted(by_date.items()):
            listed = {f.key: f for f in list_landing(spark, landing_dir(self.conf, self.schema.source, date),
                                                     self.schema.format)[0]}
            seen = read_ledger(spark, self.conf, self.schema.source, date)
            for key in sorted(keys):
                if key in seen:
                    self.stats.files_already_ingested += 1
                elif key not in listed:
                    raise StreamError(f"landing file {key} vanished before the stream could record it")
                else:
                    new.append((date, listed[key]))
        if not new:
            return None
        header = self.schema.format == "csv" and self.schema.csv.header
        lines, per_file = read_lines(spark, [f.path for _, f in new], header=header)
        lines = lines.withColumn("dt", F.regexp_extract("_file", _DT.pattern, 1))
        ledger = None
        for date in sorted({d for d, _ in new}):
            files = [f for d, f in new if d == date]
            rows = ledger_frame(spark, self.schema.source, date, files, per_file, {f.key: tag for f in files}, at)
            ledger = rows if ledger is None else ledger.unionByName(rows)
        return lines, ledger, len(new)
