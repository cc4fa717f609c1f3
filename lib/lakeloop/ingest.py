"""Batch ingest: landing files -> ``bronze.<source>``, every raw line kept verbatim with its lineage.

Files are read from ``<landing>/<source>/dt=<date>/`` (``.jsonl``/``.json``/``.csv``, optionally
``.gz``).  A file ledger (:mod:`lakeloop.ledger`) records each ingested file with its size,
modification time, row count and batch id, so a re-run for the same date reads only files it has not
seen: running twice writes nothing new.  A run claims its files in the ledger before reading them (a
conditional Delta commit), so two runs of one date at the same time never ingest a file twice.  A
file that changed after it was ingested is an error (its lines would otherwise be counted twice).

Broken input is kept, never fatal: a line that is not valid UTF-8 is stored with its bytes in
``_raw`` beside a sanitised ``value`` (curate quarantines it as ``invalid_encoding``); a compressed
file that cannot be decompressed to its end has its readable lines ingested and is recorded as
rejected (ledger and ``bronze.<source>_rejected_files``); a re-run skips it with a warning, and a
fixed file (new size or time) adds the lines after those already ingested.  A UTF-8 byte order
mark on line 1, which Hadoop's line reader drops, is put back: bronze lines are verbatim.

Line numbers are exact and computed without a Python function per line: ``spark.read.text`` reads
files in splits; rows of one split are contiguous inside a partition, so a row's offset in its split
is ``monotonically_increasing_id() - min(id)`` of the split, and the line number adds the line counts
of the file's earlier splits (one small aggregate, joined back as a broadcast).

For a CSV source with a header, line 1 of each file is the header: it is stored in ``_header`` on
every data line of that file and is not a record itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakeloop import ledger as ledger_table
from lakeloop.conf import hadoop_uri
from lakeloop.errors import LakeloopError
from lakeloop.filesize import row_bytes, sized
from lakeloop.job import JobResult, add_range_arguments, per_date_summary, run_dates
from lakeloop.lake import Lake
from lakeloop.ledger import CLAIMED, INGESTED, LEDGER_SCHEMA, REJECTED, RELEASED, claims_uri, ledger_uri
from lakeloop.schemas import SourceSchema, source_names, source_schema

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lakeloop.conf import Conf
    from lakeloop.session import RunContext

__all__ = ["LandingFile", "IngestResult", "IngestError", "SUFFIXES", "BOM", "file_key", "landing_dir", "restore_bom",
           "record_rejected", "list_landing", "read_lines", "text_lineage", "number_lines", "encode_lines",
           "inspect_file", "ingest_source", "ingest_range", "ingest", "read_ledger", "ledger_uri", "ledger_frame",
           "bronze_schema",
           "rejected_table", "REJECTED_SCHEMA", "LEDGER_SCHEMA", "run", "add_arguments"]

log = logging.getLogger("lakeloop.ingest")

SUFFIXES = {"jsonl": (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz"),
            "csv": (".csv", ".csv.gz")}

BOM = "\ufeff"

REJECTED_SCHEMA = T.StructType([
    T.StructField("path", T.StringType()),
    T.StructField("size", T.LongType()),
    T.StructField("mtime_ms", T.LongType()),
    T.StructField("reason", T.StringType()),
    T.StructField("rows_ingested", T.LongType()),
    T.StructField("batch_id", T.StringType()),
    T.StructField("rejected_at", T.TimestampType()),
    T.StructField("dt", T.StringType()),
])


def rejected_table(source: str) -> str:
    """``bronze.<source>_rejected_files``: landing files that could not be read to their end."""
    return f"bronze.{source}_rejected_files"


class IngestError(LakeloopError):
    """The landing area is inconsistent with the ledger (e.g. a file changed after ingest)."""


@dataclass(frozen=True)
class LandingFile:
    """One landing file: ``path`` as Hadoop names it (what the reader is given), ``key`` (see
    :func:`file_key`), size in bytes, modification time in epoch milliseconds."""

    path: str
    key: str
    size: int
    mtime_ms: int


def file_key(uri: str) -> str:
    """A file URI with its path percent-decoded: Spark's ``_metadata.file_path`` (``file:/a%20b``)
    and Hadoop's ``Path.toUri()`` (``file:///a%20b``) of one file give the same key."""
    parts = urlsplit(uri)
    return f"{parts.scheme or 'file'}://{parts.netloc}{unquote(parts.path)}"


@dataclass
class IngestResult:
    """What one ingest run did for one source and date."""

    source: str
    dt: str
    batch_id: str
    files: list[str] = field(default_factory=list)  # newly ingested
    rows: int = 0  # records written to bronze
    already_ingested: int = 0  # files seen by an earlier run
    recovered: list[str] = field(default_factory=list)  # in bronze, missing from the ledger: re-recorded
    ignored: list[str] = field(default_factory=list)  # files whose name does not fit the format
    rejected: dict[str, str] = field(default_factory=dict)  # broken files of this run: path -> reason
    rejected_earlier: dict[str, str] = field(default_factory=dict)  # skipped: rejected by an earlier run
    in_progress: dict[str, str] = field(default_factory=dict)  # skipped: claimed by a live run (path -> batch)
    invalid_encoding: int = 0  # lines written with their bytes in _raw
    bronze_version: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def bronze_schema(schema: SourceSchema) -> T.StructType:
    """Columns of ``bronze.<source>``; ``_header`` only for CSV sources with a header line.

    ``value`` is the line (invalid UTF-8 sequences replaced by U+FFFD); ``_raw`` holds the line's
    bytes when it is not valid UTF-8 and is null otherwise."""
    fields = [T.StructField("value", T.StringType()), T.StructField("_raw", T.BinaryType())]
    if schema.format == "csv" and schema.csv.header:
        fields.append(T.StructField("_header", T.StringType()))
    fields += [T.StructField("_file", T.StringType()), T.StructField("_line", T.LongType()),
               T.StructField("_ingested_at", T.TimestampType()), T.StructField("_batch_id", T.StringType()),
               T.StructField("dt", T.StringType())]
    return T.StructType(fields)


# -- landing files --------------------------------------------------------------------------------------


def landing_dir(conf: Conf, source: str, date: str) -> str:
    """``<landing>/<source>/dt=<date>``, a local landing as a ``file://`` URI (:func:`lakeloop.conf.hadoop_uri`)."""
    return f"{hadoop_uri(conf['landing']).rstrip('/')}/{source}/dt={date}"


def list_landing(spark: SparkSession, directory: str, fmt: str) -> tuple[list[LandingFile], list[str]]:
    """The files of ``directory`` that fit ``fmt`` (sorted by path) and the names that do not.

    Hidden and marker files (``.*``, ``_*``) are skipped; a missing directory is an empty day.
    Listing goes through Hadoop's FileSystem, so HDFS and object stores work as local disks do.
    """
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(directory)
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return [], []
    found: list[LandingFile] = []
    ignored: list[str] = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if status.isDirectory() or name.startswith((".", "_")):
            continue
        hadoop_path = status.getPath().toString()
        if name.lower().endswith(SUFFIXES[fmt]):
            found.append(LandingFile(hadoop_path, file_key(status.getPath().toUri().toString()),
                                     int(status.getLen()), int(status.getModificationTime())))
        else:
            ignored.append(hadoop_path)
    return sorted(found, key=lambda f: f.path), sorted(ignored)


def read_lines(spark: SparkSession, paths: Sequence[str], header: bool = False, *,
               damaged: Sequence[str] = (), bom: Sequence[str] = ()) -> tuple[DataFrame, dict[str, tuple[str, int]]]:
    """Every line of ``paths`` with its file and 1-based line number.

    Returns ``(frame, files)``: ``frame`` has ``value``, ``_file`` (Spark's rendering of the path),
    ``_line`` (and ``_header`` when ``header``: line 1 of each file, which is then not a row
    itself); ``files`` maps :func:`file_key` to ``(_file, records)`` for every file with a line.
    ``damaged`` files (also in ``paths``) are read up to the first error; ``bom`` files get their
    line 1's byte order mark back (see :func:`number_lines`).
    """
    broken = set(damaged)
    whole = [p for p in paths if p not in broken]
    parts = [spark.read.text(whole)] if whole else []
    if broken:
        parts.append(spark.read.option("ignoreCorruptFiles", "true").text([p for p in paths if p in broken]))
    frames = [part.select(F.col("value"), *text_lineage()) for part in parts]
    raw = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    return number_lines(raw, header, bom={file_key(p) for p in bom})


def text_lineage() -> list[Column]:
    """``_file`` and ``__block`` (the split's start offset) of a text file source's rows: what
    :func:`number_lines` needs beside ``value``."""
    return [F.col("_metadata.file_path").alias("_file"), F.col("_metadata.file_block_start").alias("__block")]


def number_lines(raw: DataFrame, header: bool = False,
                 bom: set[str] | frozenset[str] = frozenset()) -> tuple[DataFrame, dict[str, tuple[str, int]]]:
    """Number the lines of ``raw``: rows of Spark's text source (``value``, ``_file``, ``__block``
    from :func:`text_lineage`, any other columns are kept) in their scan order, no shuffle before.

    Returns ``(frame, files)`` as :func:`read_lines`; ``__block`` is dropped.  One small aggregate
    is collected; ``raw`` is evaluated again by the returned frame (persist it to read once).
    Line 1 of the files whose :func:`file_key` is in ``bom`` gets back the byte order mark that
    Hadoop's line reader drops.
    """
    kept = [c for c in raw.columns if c != "__block"]
    raw = raw.select("*", F.monotonically_increasing_id().alias("__pos"))
    blocks = raw.groupBy("_file", "__block").agg(F.min("__pos").alias("__first"), F.count("*").alias("__n"))
    earlier = Window.partitionBy("_file").orderBy("__block").rowsBetween(Window.unboundedPreceding, -1)
    offsets = blocks.select("_file", "__block", "__first",
                            F.coalesce(F.sum("__n").over(earlier), F.lit(0)).alias("__offset"),
                            F.sum("__n").over(Window.partitionBy("_file")).alias("__lines")).collect()
    per_file = {file_key(r["_file"]): (r["_file"], int(r["__lines"]) - int(header and r["__lines"] > 0))
                for r in offsets}
    offset_df = raw.sparkSession.createDataFrame(
        [(r["_file"], r["__block"], r["__first"], r["__offset"]) for r in offsets],
        "_file string, __block long, __first long, __offset long")
    lines = (raw.join(F.broadcast(offset_df), ["_file", "__block"])
             .select(*kept, (F.col("__pos") - F.col("__first") + F.col("__offset") + 1).alias("_line")))
    lines = restore_bom(lines, sorted({r["_file"] for r in offsets if file_key(r["_file"]) in bom}))
    if not header:
        return lines, per_file
    headers = lines.where(F.col("_line") == 1).select("_file", F.col("value").alias("_header"))
    data = lines.where(F.col("_line") > 1).join(F.broadcast(headers), "_file", "left")
    return data.select("value", "_header", *[c for c in kept if c != "value"], "_line"), per_file


def restore_bom(lines: DataFrame, files: Sequence[str]) -> DataFrame:
    """``lines`` (numbered, ``_file`` as Spark renders it) with the byte order mark that Hadoop's line
    reader drops put back at the start of line 1 of ``files`` (in ``_header`` when line 1 is a CSV
    header already split off): bronze keeps the line verbatim."""
    if not files:
        return lines
    column, first = ("_header", F.lit(True)) if "_header" in lines.columns else ("value", F.col("_line") == 1)
    marked = first & F.col("_file").isin(list(files))
    return lines.withColumn(column, F.when(marked, F.concat(F.lit(BOM), column)).otherwise(F.col(column)))


# -- encoding, damaged files ------------------------------------------------------------------------------


def encode_lines(lines: DataFrame) -> DataFrame:
    """``value`` made valid UTF-8 (bad sequences become U+FFFD) and ``_raw``: the line's bytes when
    they are not valid UTF-8, else null.  Spark's text source keeps the bytes as they are in the
    file, which parquet readers other than Spark refuse."""
    bad = ~F.is_valid_utf8("value")
    return lines.withColumn("_raw", F.when(bad, F.col("value").cast("binary"))).withColumn(
        "value", F.when(bad, F.make_valid_utf8("value")).otherwise(F.col("value")))


def inspect_file(spark: SparkSession, path: str) -> tuple[bool, str | None]:
    """``(starts with a UTF-8 BOM, why it cannot be read to its end or None)`` of one landing file.

    A compressed file is decompressed to its end on the driver (through Hadoop's codec, as Spark's
    reader does) to find truncated or corrupt files; a plain file is only opened.
    """
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(hconf).getCodec(hpath)
    stream = None
    try:
        stream = hpath.getFileSystem(hconf).open(hpath)
        if codec is not None:
            stream = codec.createInputStream(stream)
        head = [stream.read() for _ in range(3)]
        if codec is not None:
            stream.transferTo(jvm.java.io.OutputStream.nullOutputStream())
    except Py4JJavaError as exc:
        err = exc.java_exception
        return False, f"{err.getClass().getName()}: {err.getMessage()}"
    finally:
        if stream is not None:
            stream.close()
    return head == [0xEF, 0xBB, 0xBF], None


# -- ledger ----------------------------------------------------------------------------------------------


def read_ledger(spark: SparkSession, conf: Conf, source: str, date: str) -> dict[str, dict]:
    """The deciding ledger row of each file of ``source`` and ``date``, by :func:`file_key` of its
    path (see :func:`lakeloop.ledger.effective`)."""
    return ledger_table.read_ledger(conf, source, date, file_key)


def ledger_frame(spark: SparkSession, source: str, date: str, files: Sequence[LandingFile],
                 seen: dict[str, tuple[str, int]], batch: dict[str, str], at: dt.datetime,
                 status: str = INGESTED, detail: dict[str, str] | None = None) -> DataFrame:
    """Ledger rows; ``seen`` maps a file key to ``(_file, rows)`` (absent: an empty file)."""
    return ledger_table.ledger_frame(spark, _ledger_rows(source, date, files, seen, batch, at, status, detail))


def _ledger_rows(source: str, date: str, files: Sequence[LandingFile], seen: dict[str, tuple[str, int]],
                 batch: dict[str, str], at: dt.datetime, status: str,
                 detail: dict[str, str] | None = None) -> list[tuple]:
    return [(source, seen.get(f.key, (f.path, 0))[0], f.size, f.mtime_ms, seen.get(f.key, (f.path, 0))[1],
             batch[f.key], at, date, status, (detail or {}).get(f.key)) for f in files]


@dataclass
class _Work:
    """Files one run claimed for one date (with the records of each already in bronze) and files it recorded."""

    date: str = ""
    todo: list[LandingFile] = field(default_factory=list)
    prefix: dict[str, int] = field(default_factory=dict)  # key -> records in bronze from an earlier run
    recovered: list[tuple] = field(default_factory=list)  # ledger rows of files found in bronze


class _Bronze:
    """Rows already in bronze for ``dates`` by file key and batch, read once when first needed."""

    def __init__(self, spark: SparkSession, lake: Lake, uri: str, dates: Sequence[str]) -> None:
        self.spark, self.lake, self.uri, self.dates = spark, lake, uri, list(dates)
        self._rows: dict[str, dict[str, tuple[str, int]]] | None = None

    def rows(self, key: str) -> dict[str, tuple[str, int]]:
        if self._rows is None:
            self._rows = defaultdict(dict)
            if self.lake.exists(self.uri):
                where = "dt IN (" + ", ".join(f"'{d}'" for d in self.dates) + ")"
                for r in (self.lake.read(self.spark, self.uri, where=where)
                          .groupBy("_file", "_batch_id").count().collect()):
                    self._rows[file_key(r["_file"])][r["_batch_id"]] = (r["_file"], int(r["count"]))
        return self._rows.get(key, {})


def _plan(source: str, date: str, files: Sequence[LandingFile], result: IngestResult, at: dt.datetime,
          found: _Bronze, work: _Work, me: str):
    """The claim plan of :func:`lakeloop.ledger.claim` for the ``files`` of one date: claims for new files,
    rows of recovered ones; fills ``result`` and ``work`` from the ledger as it is at the attempt."""

    def plan(ledger: dict[str, dict]) -> list[tuple]:
        result.already_ingested, result.recovered = 0, []
        result.rejected_earlier, result.in_progress = {}, {}
        work.todo, work.prefix, work.recovered = [], {}, []
        rows: list[tuple] = []
        for f in files:
            row = ledger.get(f.key)
            status = None if row is None else (row["status"] or INGESTED)
            same = row is not None and (row["size"], row["mtime_ms"]) == (f.size, f.mtime_ms)
            if status == INGESTED and same:
                result.already_ingested += 1
                continue
            if status == INGESTED:
                raise IngestError(
                    f"landing file {f.path} changed after batch {row['batch_id']} ingested it "
                    f"(size {row['size']} -> {f.size}, mtime {row['mtime_ms']} -> {f.mtime_ms} ms); "
                    "upstream must write new content to a new file")
            if status == REJECTED and same:
                result.rejected_earlier[f.path] = row["detail"] or ""
                continue
            if status == CLAIMED and not ledger_table.owner_gone(row["detail"]):
                result.in_progress[f.path] = f"{row['batch_id']} ({row['detail']})"
                continue
            prefix = int(row["rows"] or 0) if status in (REJECTED, CLAIMED) else 0
            # a dead claim's own rows, or (no ledger row: a run stopped before it) any batch's rows
            done = found.rows(f.key)
            hit = done.get(row["batch_id"]) if status == CLAIMED else (
                next(iter(done.values())) if status is None and done else None)
            if hit is not None:
                result.recovered.append(hit[0])
                work.recovered += _ledger_rows(source, date, [f], {f.key: (hit[0], prefix + hit[1])},
                                               {f.key: row["batch_id"] if row else next(iter(done))}, at,
                                               INGESTED)
            else:
                work.todo.append(f)
                work.prefix[f.key] = prefix
            rows += _ledger_rows(source, date, [f], {f.key: (f.path, prefix)}, {f.key: result.batch_id}, at,
                                 CLAIMED, {f.key: me})
        return rows

    return plan


def _claim(spark: SparkSession, conf: Conf, source: str, days: Sequence[_Day], at: dt.datetime,
           me: str) -> list[_Work]:
    """Claim the files of every date of this run in one ledger commit (see :mod:`lakeloop.ledger`); log what
    is skipped.  One :class:`_Work` per date, in the order of ``days``."""
    works = [_Work(day.result.dt) for day in days]
    if any(day.files for day in days):
        lake = Lake.from_conf(conf)
        found = _Bronze(spark, lake, lake.uri(f"bronze.{source}"), [day.result.dt for day in days])
        plans = [_plan(source, day.result.dt, day.files, day.result, at, found, work, me)
                 for day, work in zip(days, works, strict=True)]
        ledger_table.claim(conf, source, [day.result.dt for day in days],
                           lambda ledger: [row for plan in plans for row in plan(ledger)], file_key)
    recovered = [row for work in works for row in work.recovered]
    if recovered:
        Lake.from_conf(conf).write(ledger_table.ledger_frame(spark, recovered), ledger_uri(conf), mode="append",
                                   merge_schema=True)
    for day in days:
        for path, reason in day.result.rejected_earlier.items():
            log.warning("%s %s: skipped %s, rejected by an earlier run: %s (a fixed file needs a new size or time)",
                        source, day.result.dt, path, reason)
        for path, holder in day.result.in_progress.items():
            log.warning("%s %s: skipped %s, claimed by the running batch %s", source, day.result.dt, path, holder)
    return works


# -- one source, one date or a range of dates ---------------------------------------------------------------


@dataclass
class _Day:
    """One date of a run: its landing files and its result."""

    result: IngestResult
    files: list[LandingFile] = field(default_factory=list)


BatchId = str | Callable[[str], str] | None


def _batch_of(batch_id: BatchId, date: str) -> str:
    if callable(batch_id):
        return batch_id(date)
    return batch_id or f"{date}-{uuid.uuid4().hex[:12]}"


def ingest_source(spark: SparkSession, conf: Conf, source: str, date: str, *, batch_id: BatchId = None,
                  now: dt.datetime | None = None) -> IngestResult:
    """Append the new landing files of ``source`` for ``date`` to ``bronze.<source>``.

    Parameters
    ----------
    spark : :class:`SparkSession`
    conf : :class:`lakeloop.conf.Conf`
    source : str
        A source declared under ``sources`` in conf.
    date : str
        Run date ``YYYY-MM-DD``: the landing partition read and the bronze ``dt`` written.
    batch_id : str or callable, optional
        Recorded in ``_batch_id`` and the ledger (a callable gets the date); a fresh id by default.
    now : datetime, optional
        ``_ingested_at`` of the batch (UTC); the current time by default.

    Returns
    -------
    :class:`IngestResult`
    """
    return ingest_range(spark, conf, source, [date], batch_id=batch_id, now=now)[0]


def ingest_range(spark: SparkSession, conf: Conf, source: str, dates: Sequence[str], *, batch_id: BatchId = None,
                 now: dt.datetime | None = None) -> list[IngestResult]:
    """:func:`ingest_source` for every date of ``dates`` in one pass: the new files of all the dates are
    claimed in one ledger commit, read by one Spark job and appended to bronze in one commit (partitioned by
    ``dt``); each date keeps its own result, batch id (``batch_id(date)`` when callable) and ledger rows, so a
    later run of one of the dates finds its files ingested.  One result per date, in order."""
    schema = source_schema(conf, source)
    for date in dates:
        dt.date.fromisoformat(date)
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    days = [_Day(IngestResult(source, date, _batch_of(batch_id, date))) for date in dates]
    for day in days:
        day.files, day.result.ignored = list_landing(spark, landing_dir(conf, source, day.result.dt), schema.format)
        for name in day.result.ignored:
            log.warning("%s %s: ignored %s (expected %s)", source, day.result.dt, name,
                        ", ".join(SUFFIXES[schema.format]))
    with ledger_table.active(uuid.uuid4().hex[:8]) as me:
        # ledger and claim rows carry the wall-clock time: it orders a file's rows (see ledger.effective)
        works = _claim(spark, conf, source, days, dt.datetime.now(dt.UTC), me)
        for day, work in zip(days, works, strict=True):
            if not work.todo:
                r = day.result
                log.info("%s %s: no new files (%d already ingested, %d recovered, %d rejected earlier, "
                         "%d in progress)", source, r.dt, r.already_ingested, len(r.recovered),
                         len(r.rejected_earlier), len(r.in_progress))
        busy = [(day, work) for day, work in zip(days, works, strict=True) if work.todo]
        if not busy:
            return [day.result for day in days]
        try:
            _ingest_files(spark, conf, schema, busy, at)
        except BaseException:
            for day, work in busy:
                _release(conf, source, day.result.dt, work, day.result)
            raise
    return [day.result for day in days]


def _release(conf: Conf, source: str, date: str, work: _Work, result: IngestResult) -> None:
    """Give up this run's claims after a failure (best effort: a dead owner's claim is taken over anyway)."""
    try:
        rows = _ledger_rows(source, date, work.todo, {f.key: (f.path, work.prefix[f.key]) for f in work.todo},
                            {f.key: result.batch_id for f in work.todo}, dt.datetime.now(dt.UTC), CLAIMED,
                            {f.key: RELEASED for f in work.todo})
        ledger_table.append(claims_uri(conf), rows, Lake.from_conf(conf).storage_options)
    except Exception:  # noqa: BLE001 - the original error matters more
        log.exception("%s %s: could not release the claims of batch %s", source, date, result.batch_id)


def _date_of_file(date: str | None) -> Column:
    """The run date of a line: ``date``, or (several dates) its file's landing folder, ``.../dt=<date>/<name>``
    (:func:`landing_dir`)."""
    if date is not None:
        return F.lit(date)
    return F.regexp_extract(F.col("_file"), r"/dt=([^/]+)/[^/]*$", 1)


def _with_batch_ids(lines: DataFrame, batches: dict[str, str]) -> DataFrame:
    """``_batch_id`` of each line's date: a literal for one batch, else a broadcast join on ``dt``."""
    if len(set(batches.values())) == 1:
        return lines.withColumn("_batch_id", F.lit(next(iter(batches.values()))))
    ids = lines.sparkSession.createDataFrame(sorted(batches.items()), "dt string, _batch_id string")
    return lines.join(F.broadcast(ids), "dt", "left").select(*lines.columns, "_batch_id")


def _ingest_files(spark: SparkSession, conf: Conf, schema: SourceSchema, busy: Sequence[tuple[_Day, _Work]],
                  at: dt.datetime) -> None:
    """Read the claimed files of every date in ``busy`` at once and append them to bronze in one commit."""
    source, lake = schema.source, Lake.from_conf(conf)
    new = [f for _, work in busy for f in work.todo]
    prefix = {k: n for _, work in busy for k, n in work.prefix.items()}
    header = schema.format == "csv" and schema.csv.header
    checked = {f.key: inspect_file(spark, f.path) for f in new}
    errors = {k: err for k, (_, err) in checked.items() if err}
    damaged = [f.path for f in new if f.key in errors]
    lines, per_file = read_lines(spark, [f.path for f in new], header=header, damaged=damaged,
                                 bom=[f.path for f in new if checked[f.key][0]])
    label = busy[0][1].date if len(busy) == 1 else f"{busy[0][1].date}..{busy[-1][1].date}"
    missing = [f.path for f in new if f.key not in per_file and f.size > 0 and f.key not in errors]
    if missing:
        raise IngestError(f"{source} {label}: Spark read no lines of {missing} although they are not empty; "
                          "check the file paths")
    lines = _after_prefix(lines, per_file, prefix, header)
    batches = {work.date: d.result.batch_id for d, work in busy}
    bronze = encode_lines(lines).select(*lines.columns, "_raw", F.lit(at).cast("timestamp").alias("_ingested_at"),
                                        _date_of_file(busy[0][1].date if len(busy) == 1 else None).alias("dt"))
    bronze = _with_batch_ids(bronze, batches).persist()
    rows = {work.date: sum(max(per_file.get(f.key, ("", 0))[1] - work.prefix[f.key], 0) for f in work.todo)
            for _, work in busy}
    try:
        written = lake.write(sized(bronze.select(*bronze_schema(schema).names), rows,
                                   row_bytes(lake, f"bronze.{source}", _landing_row_bytes(new, per_file)),
                                   lake.target_file_size),
                             f"bronze.{source}", mode="append", partition_by=["dt"], merge_schema=True)
        invalid = ({r["dt"]: int(r["count"]) for r in bronze.where(F.col("_raw").isNotNull()).groupBy("dt").count()
                    .collect()} if written.rows else {})
    finally:
        bronze.unpersist()
    rejected_rows, ledger_rows = [], []
    stamp = dt.datetime.now(dt.UTC)
    for d, work in busy:
        result, todo = d.result, work.todo
        result.invalid_encoding = invalid.get(work.date, 0)
        result.rejected = {per_file.get(f.key, (f.path, 0))[0]: errors[f.key] for f in todo if f.key in errors}
        rejected_rows += _rejected_rows(source, work.date, [f for f in todo if f.key in errors], per_file, errors,
                                        result.batch_id, at)
        batch = {f.key: result.batch_id for f in todo}
        ledger_rows += [row for f in todo for row in _ledger_rows(
            source, work.date, [f], per_file, batch, stamp, REJECTED if f.key in errors else INGESTED, errors)]
        result.files = [f.path for f in todo]
        result.rows = sum(max(per_file.get(f.key, ("", 0))[1] - work.prefix[f.key], 0) for f in todo)
        result.bronze_version = written.version
        log.info("%s %s: %d new file(s), %d rows (%d not valid UTF-8), %d rejected -> bronze v%s", source,
                 work.date, len(todo), result.rows, result.invalid_encoding, len(result.rejected), written.version)
    if rejected_rows:
        lake.write(spark.createDataFrame(rejected_rows, REJECTED_SCHEMA), rejected_table(source), mode="append",
                   partition_by=["dt"])
    lake.write(ledger_table.ledger_frame(spark, ledger_rows), ledger_uri(conf), mode="append", merge_schema=True)


def _landing_row_bytes(files: Sequence[LandingFile], per_file: dict[str, tuple[str, int]]) -> float:
    """Bytes per line of the landing files: the size estimate of a first write to bronze."""
    lines = sum(per_file.get(f.key, ("", 0))[1] for f in files)
    return sum(f.size for f in files) / lines if lines else 64.0


def _after_prefix(lines: DataFrame, per_file: dict[str, tuple[str, int]], prefix: dict[str, int],
                  header: bool) -> DataFrame:
    """Drop the records of fixed files that an earlier run already wrote (the first ``prefix`` ones)."""
    drop = [(per_file[k][0], n + int(header)) for k, n in prefix.items() if n and k in per_file]
    if not drop:
        return lines
    seen = F.lit(False)
    for rendered, last in drop:
        seen = seen | ((F.col("_file") == rendered) & (F.col("_line") <= last))
    return lines.where(~seen)


def _rejected_rows(source: str, date: str, files: Sequence[LandingFile], per_file: dict[str, tuple[str, int]],
                   errors: dict[str, str], batch_id: str, at: dt.datetime) -> list[tuple]:
    """Rows of :func:`rejected_table` for the broken ``files`` of one date (logged)."""
    rows = [(per_file.get(f.key, (f.path, 0))[0], f.size, f.mtime_ms, errors[f.key], per_file.get(f.key, ("", 0))[1],
             batch_id, at, date) for f in files]
    for path, _, _, reason, n, *_ in rows:
        log.warning("%s %s: rejected %s after %d readable record(s): %s", source, date, path, n, reason)
    return rows


def record_rejected(spark: SparkSession, conf: Conf, source: str, date: str, files: Sequence[LandingFile],
                    per_file: dict[str, tuple[str, int]], errors: dict[str, str], batch_id: str,
                    at: dt.datetime, txn: tuple[str, int] | None = None) -> None:
    """Append the broken ``files`` (``errors``: file key -> reason) to :func:`rejected_table`, with the
    records of each that were readable (and are in bronze); ``txn`` makes a replayed write a no-op."""
    rows = _rejected_rows(source, date, files, per_file, errors, batch_id, at)
    Lake.from_conf(conf).write(spark.createDataFrame(rows, REJECTED_SCHEMA), rejected_table(source), mode="append",
                               partition_by=["dt"], txn=txn)


def ingest(spark: SparkSession, conf: Conf, date: str | Sequence[str], sources: Sequence[str] | None = None,
           batch_id: BatchId = None) -> list[IngestResult]:
    """Ingest ``sources`` (default: every source in conf) for ``date`` (or every date of a sequence, in one
    pass per source: :func:`ingest_range`); one result per source and date."""
    names = list(sources) if sources else source_names(conf)
    dates = [date] if isinstance(date, str) else list(date)
    for name in names:
        source_schema(conf, name)  # every source is checked before any is written
    return [r for name in names for r in ingest_range(spark, conf, name, dates, batch_id=batch_id)]


DESCRIPTION = "landing files -> bronze.<source> (new files only) for --date or every date of --from/--to"


def run(ctx: RunContext, spark: SparkSession, args) -> JobResult[list[IngestResult]]:
    """The ``ingest`` job: ingest ``--source`` (or every source) for ``--date`` or ``--from``..``--to``."""
    dates = [d.isoformat() for d in run_dates(ctx.run_date, args)]
    results = ingest(spark, ctx.conf, dates, args.source, batch_id=lambda d: f"{d}-{ctx.run_id}")
    for r in results:
        ctx.log.info("ingest %s", json.dumps(r.as_dict(), sort_keys=True))
    return JobResult(results, per_date_summary(dates, results, _source_summary))


def _source_summary(results: Sequence[IngestResult]) -> dict:
    keep = ("rows", "already_ingested", "bronze_version")
    return {"sources": {r.source: {"files": len(r.files), **{k: getattr(r, k) for k in keep}} for r in results}}


def add_arguments(parser) -> None:
    """The options of the ``ingest`` job beyond the common ones."""
    parser.add_argument("--source", action="append", default=None,
                        help="source to ingest (repeatable; default: every source in conf)")
    add_range_arguments(parser, "a range ingested in one pass")
