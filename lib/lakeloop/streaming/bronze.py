"""foreachBatch body of the bronze query: raw lines -> ``bronze.<source>`` exactly once.

Landing files share the batch ingest ledger (``ingest.ledger_table``, :mod:`lakeloop.ledger`): a
micro-batch claims its files as batch ingest does, skips files the ledger or another run's claim
already holds (ingested by ``jobs/ingest.py`` or an earlier micro-batch) and records the files it
writes, so batch ingest skips them in turn.  A micro-batch replayed after a crash finds its own
claims (same tag) and goes on with them.  Lines that are not valid UTF-8 keep their bytes in
``_raw`` (:func:`lakeloop.ingest.encode_lines`).  The micro-batch's lines are read once and cached;
:func:`lakeloop.ingest.number_lines` gives them the same exact ``_line`` numbers as batch ingest.

Malformed and invalid lines are classified with the curate expressions (reason codes of the batch
layer) inside the streaming query's plan (:func:`verdict`), which Spark analyses once when the query
starts, not once per micro-batch; only a CSV source with a header line is classified per
micro-batch, after numbering, since its header is line 1 of each file.  Rejected lines go to
``silver.<source>_stream_quarantine``; they are counted by reason in the bronze write's own job
(:class:`pyspark.sql.Observation`), and a micro-batch without any writes no quarantine commit.

Every table write of a micro-batch carries the transaction ``(query id, batch id)``: a batch replayed
after a crash re-commits nothing that was already committed (bronze, quarantine, ledger each on their
own), and files committed to bronze but missing from the ledger are recorded by the replay.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F

from lakeloop import ledger as ledger_table
from lakeloop import tables
from lakeloop.curate import REASONS, classify, cleanse, parse, quarantine_frame
from lakeloop.delta.stream import query_app_id
from lakeloop.ingest import (
    LandingFile,
    bronze_schema,
    encode_lines,
    file_key,
    inspect_file,
    landing_dir,
    ledger_frame,
    ledger_uri,
    list_landing,
    number_lines,
    record_rejected,
    restore_bom,
)
from lakeloop.lake import Lake
from lakeloop.streaming.sources import StreamError

if TYPE_CHECKING:

    from lakeloop.conf import Conf
    from lakeloop.schemas import SourceSchema

__all__ = ["BronzeStats", "BronzeWriter", "quarantine_table", "stream_quarantine", "verdict", "classified_early"]

log = logging.getLogger("lakeloop.stream")

_DT = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/")
# curate's reason codes but ``duplicate``: the stream does not de-duplicate
STREAM_REASONS = tuple(r for r in REASONS if r != "duplicate")


def quarantine_table(source: str) -> str:
    """Table of the lines the stream rejected: ``silver.<source>_stream_quarantine``.

    Not ``silver.<source>_quarantine``: curate overwrites that one per ``dt`` from all of bronze.
    """
    return f"silver.{source}_stream_quarantine"


def verdict(lines: DataFrame, schema: SourceSchema) -> DataFrame:
    """``lines`` with curate's ``reason`` and ``detail`` (null reason: a valid line before
    de-duplication).  Works on streaming and static frames; needs ``_header`` for a CSV source
    with a header line."""
    return classify(cleanse(parse(lines, schema), schema), schema).select(*lines.columns, "reason", "detail")


def classified_early(schema: SourceSchema) -> bool:
    """Whether the bronze query classifies lines in its streaming plan (every source but a CSV
    source with a header line, whose lines need their file's line 1)."""
    return not (schema.format == "csv" and schema.csv.header)


def stream_quarantine(lines: DataFrame, schema: SourceSchema) -> DataFrame:
    """The rejected lines of a bronze frame, with curate's reason codes (no ``duplicate``: the
    stream does not de-duplicate; curate does, over the whole day).  ``lines`` may carry
    ``reason``/``detail`` already (:func:`verdict`)."""
    if "reason" not in lines.columns:
        lines = verdict(lines, schema)
    return quarantine_frame(lines)


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
        self.lake = Lake.from_conf(conf)
        self.bronze_uri = self.lake.uri(f"bronze.{schema.source}")
        self.quarantine_uri = self.lake.uri(quarantine_table(schema.source))
        self.stats = BronzeStats()
        self._app_id: str | None = None

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self._app_id is None:
            self._app_id = query_app_id(self.checkpoint, self.lake.storage_options)
        at = dt.datetime.now(dt.UTC)
        tag = f"stream-{self._app_id[-12:]}-{batch_id}"
        cached = batch.persist()  # the micro-batch's files are read once
        try:
            with ledger_table.active(tag):
                found = self._new_lines(cached, batch_id, tag, at) if self.from_files else (cached, None, 0)
                if found is not None:
                    self._write(*found, batch_id, tag, at)
        finally:
            cached.unpersist()

    def _write(self, lines: DataFrame, ledger: DataFrame | None, files: int, batch_id: int, tag: str,
               at: dt.datetime) -> None:
        """The three transactional writes of one micro-batch: bronze, quarantine, ledger."""
        if "_raw" not in lines.columns:
            lines = encode_lines(lines)
        lines = lines.select("*", F.lit(at).cast("timestamp").alias("_ingested_at"), F.lit(tag).alias("_batch_id"))
        txn = (self._app_id, int(batch_id))
        if "reason" not in lines.columns:
            lines = verdict(lines, self.schema)
        counted = Observation(f"quarantine-{tag}")
        observed = lines.observe(counted, *[F.count_if(F.col("reason") == r).alias(r) for r in STREAM_REASONS])
        written = self.lake.write(observed.select(*bronze_schema(self.schema).names), self.bronze_uri,
                                  mode="append", partition_by=["dt"], txn=txn)
        # counted by the bronze write's own job; a skipped (replayed) write ran no job, counted nothing
        by_reason = {} if written.skipped else {r: int(n) for r, n in counted.get.items() if n}
        if written.skipped or by_reason:
            self.lake.write(stream_quarantine(lines, self.schema), self.quarantine_uri, mode="append",
                            partition_by=["dt"], txn=txn)
        if ledger is not None:
            self.lake.write(ledger, ledger_uri(self.conf), mode="append", txn=txn, merge_schema=True)
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

    def _claim(self, spark, date: str, keys: list[str], tag: str, at: dt.datetime) -> list[LandingFile]:
        """Claim the files ``keys`` of ``date`` that neither the ledger nor another run's claim holds
        (a claim of this micro-batch's own tag, left by a crash, is taken back)."""
        source = self.schema.source
        listed = {f.key: f for f in list_landing(spark, landing_dir(self.conf, source, date), self.schema.format)[0]}
        me = ledger_table.owner(tag)
        mine: list[LandingFile] = []

        def plan(ledger: dict[str, dict]) -> list[tuple]:
            mine.clear()
            rows = []
            for key in keys:
                row = ledger.get(key)
                own = row is not None and row["status"] == ledger_table.CLAIMED and (
                    row["batch_id"] == tag or row["detail"] == ledger_table.RELEASED)
                if row is not None and not own:
                    continue
                if key not in listed:
                    raise StreamError(f"landing file {key} vanished before the stream could record it")
                f = listed[key]
                mine.append(f)
                if row is None or row["batch_id"] != tag:
                    rows.append((source, f.path, f.size, f.mtime_ms, 0, tag, at, date, ledger_table.CLAIMED, me))
            return rows

        ledger_table.claim(self.conf, source, date, plan, file_key)
        return list(mine)

    def _new_lines(self, batch: DataFrame, batch_id: int, tag: str,
                   at: dt.datetime) -> tuple[DataFrame, DataFrame, int] | None:
        """Numbered lines (with ``dt``), ledger rows and number of the batch's files that no ledger
        row holds; ``None`` when there are none."""
        spark = batch.sparkSession
        header = self.schema.format == "csv" and self.schema.csv.header
        lines, per_file = number_lines(batch, header=header)
        by_date: dict[str, list[str]] = defaultdict(list)
        for key, (rendered, _) in per_file.items():
            match = _DT.search(key)
            if match is None:  # cannot happen with the dt=* glob, but never guess a partition
                raise StreamError(f"landing file {rendered} is not under a dt=YYYY-MM-DD folder")
            by_date[match.group(1)].append(key)
        new: list[tuple[str, LandingFile]] = []
        for date, keys in sorted(by_date.items()):
            mine = self._claim(spark, date, sorted(keys), tag, at)
            self.stats.files_already_ingested += len(keys) - len(mine)
            new += [(date, f) for f in mine]
        if not new:
            return None
        if len(new) < len(per_file):
            lines = lines.where(F.col("_file").isin([per_file[f.key][0] for _, f in new]))
        checked = {f.key: inspect_file(spark, f.path) for _, f in new}
        lines = restore_bom(lines, [per_file[k][0] for k, (bom, _) in checked.items() if bom])
        lines = lines.withColumn("dt", F.regexp_extract("_file", _DT.pattern, 1))
        errors = {k: err for k, (_, err) in checked.items() if err}
        ledger = None
        for date in sorted({d for d, _ in new}):
            files = [f for d, f in new if d == date]
            rows = ledger_frame(spark, self.schema.source, date, [f for f in files if f.key not in errors], per_file,
                                {f.key: tag for f in files}, at)
            broken = [f for f in files if f.key in errors]
            if broken:  # read up to the damage (its readable lines go to bronze), recorded as rejected
                record_rejected(spark, self.conf, self.schema.source, date, broken, per_file, errors, tag, at,
                                txn=(self._app_id, int(batch_id)))
                rows = rows.unionByName(ledger_frame(spark, self.schema.source, date, broken, per_file,
                                                     {f.key: tag for f in broken}, at, ledger_table.REJECTED, errors))
            ledger = rows if ledger is None else ledger.unionByName(rows)
        return lines, ledger, len(new)
